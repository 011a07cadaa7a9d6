"""The training engine: it learns, resumes a killed run to the same weights, stops early on the best
weights, refuses a checkpoint of another configuration, and stops on a NaN loss with a valid checkpoint."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from modelfusion.errors import CheckpointError, MissingDependencyError, ParameterError, TrainingError
from modelfusion.training import EarlyStopping, Trainer, load_checkpoint
from modelfusion.training.checkpoint import LAST


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return (X[:1200], y[:1200]), (X[1200:], y[1200:])


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def _accuracy(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return float((outputs.argmax(dim=1) == y).float().mean())


def _trainer(net: nn.Module, loss=nn.functional.cross_entropy, **options) -> Trainer:
    settings = dict(lr=3e-3, batch_size=64, max_epochs=4, seed=0, device="cpu", progress=False)
    return Trainer(net, loss, **{**settings, **options})


def test_training_lowers_the_loss_and_logs_every_epoch(digits, tmp_path):
    train, val = digits
    trainer = _trainer(_net(), checkpoint_dir=tmp_path, metrics={"accuracy": _accuracy}).fit(train, val)
    assert trainer.fit is not None and [r["epoch"] for r in trainer.history_] == [1, 2, 3, 4]
    assert trainer.history_[-1]["val_loss"] < trainer.history_[0]["val_loss"]
    assert trainer.history_[-1]["accuracy"] > 0.8
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["accuracy"]) > 0.8
    assert (tmp_path / LAST).is_file() and not list(tmp_path.glob(".*.tmp"))


class _KilledAt:
    """A loss that raises KeyboardInterrupt on its n-th call: a run killed mid-epoch."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0
        self.__qualname__ = "cross_entropy"  # the same configuration as the run that resumes
        self.__module__ = nn.functional.cross_entropy.__module__

    def __call__(self, outputs, y):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(outputs, y)


@pytest.mark.parametrize("scheduler", [None, "cosine", "onecycle"])
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(digits, tmp_path, scheduler):
    train, val = digits
    whole = _trainer(_net(), scheduler=scheduler, checkpoint_dir=tmp_path / "whole").fit(train, val)
    steps = -(-len(train[0]) // 64)
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of epoch 3
        _trainer(
            _net(), _KilledAt(2 * steps + steps // 2), scheduler=scheduler, checkpoint_dir=tmp_path / "b"
        ).fit(train, val)
    assert load_checkpoint(tmp_path / "b" / LAST, config=whole.config(len(train[0])))["epoch"] == 2
    resumed = _trainer(_net(seed=99), scheduler=scheduler, checkpoint_dir=tmp_path / "b").fit(train, val)
    assert resumed.resumed_from_ == 2 and len(resumed.history_) == 4
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert [r["train_loss"] for r in resumed.history_] == pytest.approx(
        [r["train_loss"] for r in whole.history_]
    )


def test_the_global_random_state_is_left_as_it_was(digits):
    train, _ = digits
    net = _net()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _trainer(net, max_epochs=1).fit(train)
    assert torch.equal(torch.get_rng_state(), before)


def test_early_stopping_ends_the_run_on_the_best_weights(digits, tmp_path):
    train, val = digits
    # lr so high that validation gets worse after the first epochs
    trainer = _trainer(
        _net(),
        optimizer="sgd",
        lr=2.5,
        max_epochs=30,
        early_stopping=EarlyStopping(monitor="accuracy", mode="max", patience=2),
        metrics={"accuracy": _accuracy},
        checkpoint_dir=tmp_path,
    )
    try:
        trainer.fit(train, val)
    except TrainingError:
        pytest.skip("this lr diverged to NaN before early stopping could act")
    assert trainer.stopped_early_ and len(trainer.history_) < 30
    best = max(trainer.history_, key=lambda r: r["accuracy"])
    assert trainer.best_epoch_ == best["epoch"] and trainer.best_score_ == best["accuracy"]
    state = load_checkpoint(tmp_path / LAST, config=trainer.config(len(train[0])))
    for name, value in trainer.model.state_dict().items():  # the model holds the best epoch's weights
        torch.testing.assert_close(value, state["early"]["best_state"][name])


def test_resuming_under_another_configuration_is_refused_naming_the_fields(digits, tmp_path):
    train, val = digits
    _trainer(_net(), max_epochs=1, checkpoint_dir=tmp_path).fit(train, val)
    with pytest.raises(CheckpointError, match=r"lr \(checkpoint 0\.003, now 0\.01\); max_epochs"):
        _trainer(_net(), lr=0.01, max_epochs=2, checkpoint_dir=tmp_path).fit(train, val)


def test_a_file_that_is_not_a_checkpoint_is_named(digits, tmp_path):
    (tmp_path / LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        _trainer(_net(), checkpoint_dir=tmp_path).fit(digits[0])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    train, _ = digits
    steps = -(-len(train[0]) // 64)
    calls = {"n": 0}

    def nan_in_epoch_two(outputs, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(outputs, y)
        return loss * float("nan") if calls["n"] == steps + 3 else loss

    with pytest.raises(TrainingError, match="the loss is nan at epoch 2, batch 3.*checkpoint keeps epoch 1"):
        _trainer(_net(), nan_in_epoch_two, checkpoint_dir=tmp_path).fit(train)
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_settings_are_named_before_any_work():
    with pytest.raises(ParameterError, match="scheduler='linear' is not one of cosine, onecycle"):
        _trainer(_net(), scheduler="linear")
    with pytest.raises(ParameterError, match="early_stopping monitors 'f1', which is not a column"):
        _trainer(_net(), early_stopping=EarlyStopping(monitor="f1"))
    with pytest.raises(ParameterError, match="precision='fp16' needs a CUDA GPU"):
        _trainer(_net(), precision="fp16").fit((np.zeros((4, 64), np.float32), np.zeros(4, np.int64)))


def test_finetuning_an_all_torch_ensemble_trains_every_member_through_the_fused_output(digits):
    from modelfusion import FusedModel, load_member, score_members
    from modelfusion.strategies import Mean
    from modelfusion.training import finetune_ensemble

    (X, y), (X_val, y_val) = digits
    members = []
    for seed in (0, 1):
        net = _net(seed)
        _trainer(net, max_epochs=1, seed=seed).fit((X, y))
        members.append(
            load_member(net.eval(), name=f"mlp{seed}", output_kind="logits", classes=list(range(10)))
        )
    fused = FusedModel(members, Mean().fit(score_members(members, X_val, progress=False)))
    before = [p.detach().clone() for p in members[0].parameters()]

    def nll() -> float:
        proba = fused.predict_proba(X_val, engine="members")
        return float(np.mean(-np.log(proba[np.arange(len(y_val)), y_val])))

    start = nll()
    trainer = finetune_ensemble(
        fused, (X, y), (X_val, y_val), lr=3e-3, max_epochs=3, seed=0, device="cpu", progress=False
    )
    assert nll() < start and trainer.history_[-1]["val_loss"] == pytest.approx(nll(), abs=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, members[0].parameters()))  # updated in place


def test_finetuning_refuses_members_that_are_not_torch(digits):
    from sklearn.linear_model import LogisticRegression

    from modelfusion import FusedModel, load_member, score_members
    from modelfusion.strategies import Mean
    from modelfusion.training import finetune_ensemble

    (X, y), _ = digits
    members = [
        load_member(_net().eval(), name="mlp", output_kind="logits", classes=list(range(10))),
        load_member(LogisticRegression(max_iter=200).fit(X, y), name="logreg"),
    ]
    fused = FusedModel(members, Mean().fit(score_members(members, X[:50], progress=False)))
    with pytest.raises(ParameterError, match="finetune_ensemble trains torch members only; logreg is not"):
        finetune_ensemble(fused, (X, y))


_DDP_SCRIPT = """
import sys
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from modelfusion.training import Trainer

work = sys.argv[1]
dist.init_process_group("gloo")
data = np.load(f"{work}/data.npz")
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
trainer = Trainer(net, nn.functional.cross_entropy, optimizer="sgd", lr=0.05, batch_size=64, max_epochs=3,
                  scheduler="cosine", seed=0, device="cpu", progress=False, checkpoint_dir=f"{work}/ckpt")
trainer.fit((data["X"], data["y"]), (data["X_val"], data["y_val"]))
if dist.get_rank() == 0:
    torch.save({"state": net.state_dict(), "history": trainer.history_}, f"{work}/result.pt")
dist.barrier()  # leave together: gloo torn down under a rank still working aborts it
dist.destroy_process_group()
"""


def test_two_gloo_processes_under_torchrun_train_the_single_process_weights(digits, tmp_path):
    """DDP on this machine: 2 processes of batch 32 each give the 1-process batch-64 run (within 1e-5)."""
    from ..conftest import torchrun

    (X, y), (X_val, y_val) = digits
    np.savez(tmp_path / "data.npz", X=X, y=y, X_val=X_val, y_val=y_val)
    (tmp_path / "train.py").write_text(_DDP_SCRIPT)
    done = torchrun(tmp_path / "train.py", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt", weights_only=True)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    # SGD: Adam divides by the root of tiny second moments, which turns float-order noise of
    # 1e-8 into 2e-5 after 3 epochs (measured); the gradients themselves agree to 1e-7.
    single = _trainer(net, optimizer="sgd", lr=0.05, max_epochs=3, scheduler="cosine").fit(
        (X, y), (X_val, y_val)
    )
    for name, value in net.state_dict().items():
        torch.testing.assert_close(result["state"][name], value, atol=1e-5, rtol=0)
    assert [r["train_loss"] for r in result["history"]] == pytest.approx(
        [r["train_loss"] for r in single.history_]
    )
    assert (tmp_path / "ckpt" / LAST).is_file()  # written by rank 0


def _scalars(folder, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every ``tag`` event TensorBoard reads back from ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_gets_every_history_column_once_per_epoch_across_a_resume(digits, tmp_path):
    pytest.importorskip("tensorboard")
    train, val = digits
    board, ckpt = tmp_path / "tb", tmp_path / "ckpt"
    steps = -(-len(train[0]) // 64)
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 3, after epochs 1 and 2 were logged
        _trainer(_net(), _KilledAt(2 * steps + 3), checkpoint_dir=ckpt, tensorboard_dir=board).fit(train, val)
    trainer = _trainer(_net(), checkpoint_dir=ckpt, tensorboard_dir=board).fit(train, val)
    logged = _scalars(board, "train_loss")
    assert [step for step, _ in logged] == [1, 2, 3, 4]
    assert [v for _, v in logged] == pytest.approx([r["train_loss"] for r in trainer.history_], rel=1e-6)
    assert [step for step, _ in _scalars(board, "val_loss")] == [1, 2, 3, 4]
    assert [step for step, _ in _scalars(board, "lr")] == [1, 2, 3, 4]


def test_tensorboard_without_the_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what a missing package looks like to import
    with pytest.raises(MissingDependencyError, match=r"modelfusion\[tensorboard\]"):
        _trainer(_net(), tensorboard_dir="tb")
