"""Issue 6, item 10: the ensemble split across workers, as the tutorial's Horovod snippet intends."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import skops.io
import torch
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier
from torch import nn

import modelfusion.distributed as distributed
from modelfusion import PredictionSet, load_member, score_members
from modelfusion.distributed import (
    balance_partition,
    load_model_partition,
    resolve_rank,
    score_members_distributed,
)
from modelfusion.members import TorchMember

from ..conftest import torchrun

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def no_launcher(monkeypatch):
    """A plain process: no torchrun variables, no Horovod."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "horovod", None)


def _linear_members(widths):
    """Torch members with 64*w + w parameters each, named by width."""
    torch.manual_seed(0)
    return [TorchMember(nn.Linear(64, w), name=f"w{w}") for w in widths]


@pytest.fixture(scope="module")
def sklearn_files(digits_split, tmp_path_factory) -> list[Path]:
    """Three fitted classifiers as .skops files, and a torch MLP as a torch.export .pt2 (logits)."""
    folder = tmp_path_factory.mktemp("distributed_members")
    X, y = digits_split["X_train"], digits_split["y_train"]
    estimators = {  # (LogisticRegression is left out: lbfgs takes seconds on a 2-core machine)
        "bayes": GaussianNB(),
        "knn": KNeighborsClassifier(n_neighbors=5),
        "tree": DecisionTreeClassifier(max_depth=6, random_state=0),
    }
    paths = []
    for name, estimator in estimators.items():
        path = folder / f"{name}.skops"
        skops.io.dump(estimator.fit(X, y), path)
        paths.append(path)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    TorchMember(mlp, name="mlp", input_shape=(64,)).save(folder)
    paths.insert(1, folder / "model.pt2")
    broken = folder / "broken.skops"  # fitted on 32 features: fails on the digits' 64
    skops.io.dump(GaussianNB().fit(X[:, :32], y), broken)
    return paths


@pytest.fixture(scope="module")
def bayes_and_tree(digits_split):
    X, y = digits_split["X_train"], digits_split["y_train"]
    return GaussianNB().fit(X, y), DecisionTreeClassifier(random_state=0).fit(X, y)


# -- load_model_partition -------------------------------------------------------------------------


def test_balance_partition_puts_the_largest_first_onto_the_lightest_rank():
    assert balance_partition([10, 1, 1, 8], world_size=2) == [[0], [1, 2, 3]]
    assert balance_partition([5, 4, 3, 3, 3], world_size=2) == [[0, 3], [1, 2, 4]]
    assert balance_partition([1, 1, 1], world_size=5) == [[0], [1], [2], [], []]


@pytest.mark.parametrize("world_size", [2, 3])
def test_partition_balances_parameter_count_and_covers_every_member_once(world_size):
    members = _linear_members([40, 5, 30, 10, 20, 35])
    shares = [load_model_partition(rank, world_size, members) for rank in range(world_size)]
    flat = [m for share in shares for m in share]
    assert sorted(map(id, flat)) == sorted(map(id, members))  # each member exactly once
    for share in shares:  # in the order given
        assert [members.index(m) for m in share] == sorted(members.index(m) for m in share)
    loads = [sum(m.n_parameters for m in share) for share in shares]
    biggest = max(m.n_parameters for m in members)
    assert max(loads) - min(loads) <= biggest
    again = [load_model_partition(rank, world_size, members) for rank in range(world_size)]
    assert [[m.name for m in s] for s in again] == [[m.name for m in s] for s in shares]


def test_partition_of_a_dict_names_the_members(bayes_and_tree, no_launcher):
    shares = [load_model_partition(r, 2, {"nb": bayes_and_tree[0], "dt": bayes_and_tree[1]}) for r in (0, 1)]
    assert sorted(m.name for share in shares for m in share) == ["dt", "nb"]


def test_rank_and_world_size_default_to_the_torchrun_environment(monkeypatch, no_launcher):
    members = _linear_members([40, 5, 30])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_rank() == (1, 2)
    assert [m.name for m in load_model_partition(members=members)] == ["w5", "w30"]


def test_rank_and_world_size_come_from_horovod_when_it_is_importable(monkeypatch, no_launcher):
    horovod = types.ModuleType("horovod")
    horovod.__spec__ = importlib.machinery.ModuleSpec("horovod", None, is_package=True)
    hvd = types.ModuleType("horovod.torch")
    hvd.rank, hvd.size = (lambda: 2), (lambda: 3)
    horovod.torch = hvd
    monkeypatch.setitem(sys.modules, "horovod", horovod)
    monkeypatch.setitem(sys.modules, "horovod.torch", hvd)
    assert resolve_rank() == (2, 3)
    assert [m.name for m in load_model_partition(members=_linear_members([40, 5, 30]))] == ["w5"]


def test_a_plain_process_is_rank_0_of_1_and_gets_every_member(no_launcher):
    members = _linear_members([40, 5, 30])
    assert resolve_rank() == (0, 1)
    assert load_model_partition(members=members) == members


def test_world_size_larger_than_the_number_of_members_is_an_error_unless_allow_idle(no_launcher):
    members = _linear_members([40, 5])
    with pytest.raises(ValueError, match=r"world_size=3 is larger than the number of members \(2: w40, w5\)"):
        load_model_partition(2, 3, members)
    shares = [load_model_partition(rank, 3, members, allow_idle=True) for rank in range(3)]
    assert [[m.name for m in s] for s in shares] == [["w40"], ["w5"], []]


def test_rank_outside_the_world_is_an_error():
    with pytest.raises(ValueError, match=r"rank 2 is outside 0\.\.1"):
        load_model_partition(2, 2, _linear_members([40, 5]))


def test_paths_are_weighed_by_file_size_and_only_the_local_share_is_loaded(
    sklearn_files, monkeypatch, no_launcher
):
    loaded = []

    def spy(source, *args, **kwargs):
        loaded.append(Path(source).name)
        return load_member(source, *args, **kwargs)

    monkeypatch.setattr(distributed, "load_member", spy)
    sizes = [p.stat().st_size for p in sklearn_files]
    expected = balance_partition(sizes, 2)[1]
    share = load_model_partition(1, 2, sklearn_files)
    assert loaded == [sklearn_files[i].name for i in expected]
    assert [m.source_path for m in share] == [sklearn_files[i] for i in expected]


# -- score_members_distributed --------------------------------------------------------------------


def test_score_members_distributed_in_one_process_is_score_members(sklearn_files, digits_split, no_launcher):
    X, y = digits_split["X_val"], digits_split["y_val"]
    single = score_members(sklearn_files, X, y=y)
    result = score_members_distributed(sklearn_files, X, y=y)
    assert result.names == single.names and result.kind == single.kind == "proba"
    np.testing.assert_allclose(result.outputs, single.outputs, atol=1e-6)


def test_several_ranks_without_a_process_group_say_how_to_launch(sklearn_files, no_launcher):
    with pytest.raises(ValueError, match="torchrun --nproc-per-node"):
        score_members_distributed(sklearn_files, np.zeros((4, 64), np.float32), rank=0, world_size=2)


_SCRIPT = """
import json, os, sys
import numpy as np
from modelfusion.distributed import load_model_partition, score_members_distributed
from modelfusion.errors import PredictionError

folder = sys.argv[1]
paths = json.loads(open(os.path.join(folder, "members.json")).read())
data = np.load(os.path.join(folder, "data.npz"))
rank = int(os.environ["RANK"])
report = {"share": [m.name for m in load_model_partition(members=paths)]}
preds = score_members_distributed(paths, data["X"], y=data["y"])
report["got_result"] = preds is not None
if preds is not None:
    preds.save(os.path.join(folder, "rank0.npz"))
try:  # a member that fails on one rank: every rank raises, none hangs
    score_members_distributed(paths + [os.path.join(folder, "broken.skops")], data["X"])
except PredictionError as exc:
    report["error"] = str(exc)
with open(os.path.join(folder, f"rank{rank}.json"), "w") as fh:
    json.dump(report, fh)
"""


@pytest.mark.slow
def test_torchrun_two_processes_gather_the_single_process_prediction_set(
    sklearn_files, digits_split, tmp_path
):
    X, y = digits_split["X_val"], digits_split["y_val"]
    folder = sklearn_files[0].parent
    work = tmp_path / "run"
    work.mkdir()
    (work / "members.json").write_text(json.dumps([str(p) for p in sklearn_files]))
    np.savez(work / "data.npz", X=X, y=y)
    script = work / "score.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    (work / "broken.skops").write_bytes((folder / "broken.skops").read_bytes())
    run = torchrun(script, work, cwd=work, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    reports = [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["got_result"] for r in reports] == [True, False]
    names = [load_member(p).name for p in sklearn_files]
    shares = [r["share"] for r in reports]
    assert sorted(shares[0] + shares[1]) == sorted(names) and all(shares)

    gathered = PredictionSet.load(work / "rank0.npz")
    single = score_members(sklearn_files, X, y=y)
    assert gathered.names == single.names == names
    assert gathered.kind == single.kind == "proba"  # logits and probabilities mixed, as in one process
    np.testing.assert_allclose(gathered.outputs, single.outputs, atol=1e-6)
    np.testing.assert_array_equal(gathered.classes, single.classes)
    np.testing.assert_array_equal(gathered.labels, y)

    for report in reports:
        assert "member 'broken' failed" in report["error"]
