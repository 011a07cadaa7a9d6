"""One training engine for every training job (distillation, fine-tuning, feature fusion): :class:`Trainer`.

A :class:`Trainer` runs epochs of mini-batch gradient descent on a torch module with a loss you
give it, validates after each epoch, and keeps a checkpoint (``checkpoint_dir/last.pt``) that a
killed run resumes from: the same command continues at the last finished epoch and ends with the
weights an uninterrupted run would have. Early stopping restores the best weights; every epoch is
a row of :attr:`Trainer.history_` and of ``checkpoint_dir/log.csv``.

Examples
--------
>>> trainer = Trainer(net, nn.functional.cross_entropy, lr=3e-3, max_epochs=20, scheduler="cosine",
...                   early_stopping=EarlyStopping(patience=3), checkpoint_dir="runs/ckpt", seed=0)
>>> trainer.fit((X_train, y_train), (X_val, y_val)).best_epoch_
7
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from modelfusion.errors import ArgumentTypeError, ParameterError, TrainingError
from modelfusion.files import write_text_atomic
from modelfusion.progress import progress_bar
from modelfusion.training.checkpoint import LAST, load_checkpoint, save_checkpoint
from modelfusion.training.sharding import BatchShares, share_rows, share_weight
from modelfusion.training.tensorboard import EpochLog, check_tensorboard

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
SCHEDULES = ("cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: A metric computed on the validation outputs: ``metric(outputs, *targets) -> float``.
Metric = Callable[..., float]


@dataclass
class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` epochs; restore the best weights.

    ``monitor`` is a column of the epoch row: ``"val_loss"`` (default) or the name of one of the
    trainer's ``metrics``; ``mode`` says whether lower (``"min"``) or higher (``"max"``) is better.

    Examples
    --------
    >>> EarlyStopping(monitor="accuracy", mode="max", patience=3)
    """

    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta``."""
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


class Trainer:
    """Mini-batch training of ``model`` on ``loss(outputs, *targets)``, with checkpoints and resume.

    Parameters
    ----------
    model : the ``nn.Module`` to train (its parameters are updated in place).
    loss : ``loss(outputs, *targets) -> scalar tensor``; a batch is ``(inputs, *targets)``.
    optimizer : ``"adamw"`` (default), ``"adam"``, ``"sgd"`` (momentum 0.9), or a callable
        ``params -> torch.optim.Optimizer``.
    lr, weight_decay : of the named optimizers.
    batch_size : rows per step; the training data is reshuffled every epoch from ``seed``.
    max_epochs : epochs to run (fewer when early stopping ends the run).
    scheduler : None, ``"cosine"`` (cosine decay to 0 over the run) or ``"onecycle"``, stepped
        every batch.
    early_stopping : an :class:`EarlyStopping`, or None to run every epoch.
    checkpoint_dir : where ``last.pt`` and ``log.csv`` go; a run finding ``last.pt`` there (from
        the same configuration) resumes from it. None: no checkpoints.
    precision : ``"auto"`` (bf16 autocast on a CUDA GPU that has it, fp16 with loss scaling on
        one that does not, fp32 on CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
    grad_clip : clip the gradients' global norm to this (None: no clipping).
    seed : seeds the shuffling and every random draw during training (dropout); the caller's
        global random state is left as it was.
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
    metrics : ``{name: metric(outputs, *targets) -> float}`` computed on the validation data
        after each epoch (e.g. accuracy), columns of the history.
    progress : draw a progress bar (default: only on an interactive terminal outside CI).
    tensorboard_dir : also write every history column as TensorBoard scalars here (rank 0 only;
        extra ``tensorboard``). Logging does not take part in the checkpoint's configuration.

    Attributes
    ----------
    history_ : one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, each metric, ``lr``, ``seconds``.
    best_epoch_, best_score_ : the epoch whose weights the model holds after early stopping.
    stopped_early_ : whether early stopping ended the run.
    resumed_from_ : the epoch the run resumed after (0 for a fresh run).

    Examples
    --------
    >>> trainer = Trainer(net, nn.functional.cross_entropy, max_epochs=5, checkpoint_dir="ckpt", seed=0)
    >>> trainer.fit((X, y), (X_val, y_val)).history_[-1]["val_loss"]
    0.21
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable[..., torch.Tensor],
        *,
        optimizer: str | Callable[[Any], torch.optim.Optimizer] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        max_epochs: int = 10,
        scheduler: str | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpoint_dir: str | Path | None = None,
        precision: str = "auto",
        grad_clip: float | None = None,
        seed: int = 0,
        device: str = "auto",
        metrics: Mapping[str, Metric] | None = None,
        progress: bool | None = None,
        tensorboard_dir: str | Path | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"Trainer trains a torch.nn.Module, got {type(model).__name__}")
        self.model, self.loss = model, loss
        self.optimizer, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.batch_size, self.max_epochs, self.scheduler = batch_size, max_epochs, scheduler
        self.early_stopping, self.precision, self.grad_clip = early_stopping, precision, grad_clip
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.seed, self.device, self.metrics, self.progress = seed, device, dict(metrics or {}), progress
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self._check_params()
        if self.tensorboard_dir is not None:
            check_tensorboard()  # before any training: a missing extra is a setup error

    def _check_params(self) -> None:
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise ParameterError(
                f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)} (or a callable)"
            )
        if self.scheduler is not None and self.scheduler not in SCHEDULES:
            raise ParameterError(
                f"scheduler={self.scheduler!r} is not one of {', '.join(SCHEDULES)} (or None)"
            )
        if self.precision not in PRECISIONS:
            raise ParameterError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name, value in (("batch_size", self.batch_size), ("max_epochs", self.max_epochs)):
            if not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ParameterError(f"lr must be > 0, got {self.lr!r}")
        monitor = self.early_stopping.monitor if self.early_stopping else "val_loss"
        if monitor not in ("val_loss", "train_loss", *self.metrics):
            raise ParameterError(
                f"early_stopping monitors {monitor!r}, which is not a column: val_loss, train_loss or one of "
                f"the metrics ({', '.join(self.metrics) or 'none given'})"
            )

    # -- the run ---------------------------------------------------------------------------------
    def fit(self, train: Any, val: Any = None) -> Trainer:
        """Train on ``train`` (a torch Dataset or a tuple of arrays ``(X, y, ...)``), validating on ``val``.

        With a checkpoint of the same configuration in ``checkpoint_dir``, continue from it. A NaN
        or infinite loss stops the run with a :class:`TrainingError`; the last checkpoint stays valid.
        """
        device = self._device()
        self.model.to(device)
        train_set, val_set = as_dataset(train, "train"), None if val is None else as_dataset(val, "val")
        if val_set is None and (self.early_stopping or self.metrics):
            raise ParameterError("early_stopping and metrics are measured on validation data: pass val=")
        world, rank = _world()
        if self.batch_size % world:
            raise ParameterError(
                f"batch_size={self.batch_size} is the batch of all {world} processes together: it must divide by {world}"
            )
        # Every process shuffles with the same seed and takes its own share of each batch, so the
        # union of the processes' batches is the single-process batch (DDP averages their gradients).
        shares = BatchShares(len(train_set), self.batch_size, world=world, rank=rank, seed=self.seed)  # type: ignore[arg-type]
        loader = DataLoader(train_set, batch_sampler=shares)
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            run = _Run(self, device, loader, val_set, world=world, rank=rank)
            run.start()
            run.loop()
        self.history_, self.resumed_from_ = run.history, run.resumed_from
        self.best_epoch_, self.best_score_ = run.best_epoch, run.best_score
        self.stopped_early_ = run.stopped_early
        return self

    def config(self, n_train: int) -> dict[str, Any]:
        """What a checkpoint is tied to: the settings and the model's parameter shapes."""
        optimizer = self.optimizer if isinstance(self.optimizer, str) else _qualname(self.optimizer)
        shapes = [[name, list(p.shape)] for name, p in self.model.state_dict().items()]
        stop = self.early_stopping
        return {
            "model": type(self.model).__name__,
            "parameters": shapes,
            "loss": _qualname(self.loss),
            "optimizer": optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "scheduler": self.scheduler,
            "early_stopping": None
            if stop is None
            else [stop.monitor, stop.mode, stop.patience, stop.min_delta],
            "precision": self.precision,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
            "metrics": sorted(self.metrics),
            "train_rows": n_train,
        }

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _autocast(self, device: torch.device) -> tuple[Any, bool]:
        """The autocast context of an epoch and whether the loss is scaled (fp16)."""
        precision = self.precision
        if precision == "auto":
            if device.type != "cuda":
                return nullcontext(), False
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "fp32":
            return nullcontext(), False
        if precision == "fp16" and device.type != "cuda":
            raise ParameterError("precision='fp16' needs a CUDA GPU; on CPU use 'fp32' or 'bf16'")
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype), precision == "fp16"


class _Run:
    """The state of one fit: optimizer, scheduler, early stopping, history; saved and restored as a whole."""

    def __init__(
        self,
        trainer: Trainer,
        device: torch.device,
        loader: DataLoader,
        val: Dataset | None,
        *,
        world: int,
        rank: int,
    ):
        self.t, self.device, self.loader, self.val = trainer, device, loader, val
        self.world, self.rank = world, rank
        # Under torchrun the forward and backward pass go through DDP (gradients averaged over the
        # processes); checkpoints and validation use the module itself.
        self.net: nn.Module = trainer.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                trainer.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.config = trainer.config(len(loader.dataset))  # type: ignore[arg-type]  # a map-style dataset
        self.optimizer = _optimizer(trainer)
        total = trainer.max_epochs * len(loader)
        self.scheduler = _scheduler(trainer.scheduler, self.optimizer, trainer.lr, total)
        self.autocast, scaled = trainer._autocast(device)
        self.scaler = torch.amp.GradScaler(device.type) if scaled else None
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.stopped_early = False
        self.resumed_from = 0

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return None if self.t.checkpoint_dir is None else self.t.checkpoint_dir / LAST

    def start(self) -> None:
        """Resume from the checkpoint when there is one."""
        if self.path is None or not self.path.exists():
            return
        state = load_checkpoint(self.path, config=self.config)
        self.t.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        early = state["early"]
        self.best_score, self.best_epoch, self.stale = (
            early["best_score"],
            early["best_epoch"],
            early["stale"],
        )
        self.best_state, self.stopped_early = early["best_state"], early["stopped"]
        self.history = list(state["history"])
        self.resumed_from = len(self.history)

    def save(self) -> None:
        if self.path is None or self.rank != 0:  # one writer: every process holds the same state
            return
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        early = {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "best_state": self.best_state,
            "stopped": self.stopped_early,
        }
        save_checkpoint(
            self.path,
            {
                "config": self.config,
                "epoch": len(self.history),
                "model": self.t.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "rng": rng,
                "early": early,
                "history": self.history,
            },
        )
        write_text_atomic(self.path.with_name("log.csv"), history_csv(self.history))

    # -- epochs ------------------------------------------------------------------------------------
    def loop(self) -> None:
        t = self.t
        remaining = range(len(self.history) + 1, t.max_epochs + 1)
        board = EpochLog(t.tensorboard_dir, start_epoch=len(self.history) + 1, enabled=self.rank == 0)
        with progress_bar(t.progress) as bar, board:
            task = bar.add_task("training", total=len(remaining) * len(self.loader))
            for epoch in remaining:
                if self.stopped_early:
                    break
                start = time.perf_counter()
                bar.update(task, description=f"training epoch {epoch}/{t.max_epochs}")
                self.loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]  # the epoch's shuffle
                train_loss = self.train_epoch(epoch, lambda: bar.advance(task))
                row = {"epoch": epoch, "train_loss": train_loss, **self.validate()}
                row["lr"] = float(self.optimizer.param_groups[0]["lr"])
                row["seconds"] = time.perf_counter() - start
                self.history.append(row)
                board.write(row)
                self.track(row, epoch)
                self.save()
        stop = t.early_stopping
        if stop is not None and stop.restore_best and self.best_state is not None:
            t.model.load_state_dict(self.best_state)

    def train_epoch(self, epoch: int, advance: Callable[[], None]) -> float:
        t, total, rows = self.t, 0.0, 0
        n_rows = len(self.loader.dataset)  # type: ignore[arg-type]  # a map-style dataset
        t.model.train()
        for step, batch in enumerate(self.loader, start=1):
            x, *targets = (to_device(b, self.device) for b in batch)
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                loss = t.loss(self.net(x), *targets)
            if not torch.isfinite(loss):
                kept = f"the checkpoint keeps epoch {epoch - 1}" if self.path else "no checkpoint was kept"
                raise TrainingError(
                    f"the loss is {loss.item()} at epoch {epoch}, batch {step}: training stopped ({kept}); "
                    "lower lr, set grad_clip=, or check the data for NaN/inf"
                )
            mine = share_rows(n_rows, t.batch_size, step=step, world=self.world, rank=self.rank)
            self.step(loss * share_weight(n_rows, t.batch_size, step=step, world=self.world, rank=self.rank))
            if self.scheduler is not None:
                self.scheduler.step()
            total, rows = total + float(loss.detach()) * mine, rows + mine
            advance()
        if self.world > 1:  # the mean over every process's rows
            sums = torch.tensor([total, float(rows)], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            total, rows = float(sums[0]), int(sums[1])
        return total / max(rows, 1)

    def step(self, objective: torch.Tensor) -> None:
        """Backward and an optimizer step (loss scaling, gradient clipping); DDP averages the
        processes' gradients during the backward."""
        t = self.t
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            objective.backward()
        if t.grad_clip is not None:
            nn.utils.clip_grad_norm_(t.model.parameters(), t.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        t = self.t
        t.model.eval()
        outputs, targets = [], []
        with torch.no_grad(), self.autocast:
            for batch in DataLoader(self.val, t.batch_size):
                x, *ys = (to_device(b, self.device) for b in batch)
                outputs.append(t.model(x).float())
                targets.append(ys)
        out = torch.cat(outputs)
        ys = [torch.cat([y[i] for y in targets]) for i in range(len(targets[0]))]
        row = {"val_loss": float(t.loss(out, *ys))}
        row.update({name: float(metric(out, *ys)) for name, metric in t.metrics.items()})
        return row

    def track(self, row: Mapping[str, Any], epoch: int) -> None:
        """Early stopping's bookkeeping after an epoch: the best value, its weights, epochs without progress."""
        stop = self.t.early_stopping
        if stop is None:
            self.best_epoch = epoch
            return
        value = float(row[stop.monitor])
        if not math.isfinite(value):
            raise TrainingError(f"{stop.monitor} is {value} after epoch {epoch}; training stopped")
        if stop.improved(value, self.best_score):
            self.best_score, self.best_epoch, self.stale = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.t.model.state_dict().items()}
        else:
            self.stale += 1
            self.stopped_early = self.stale >= stop.patience


# -- helpers ------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """``(world size, rank)`` of the torch.distributed group this process is in, ``(1, 0)`` outside one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors moved to ``device``, inside dicts, lists and tuples too (a multimodal batch:
    ``{"image": tensor, "text": [str, ...]}``); anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def as_dataset(data: Any, what: str) -> Dataset:
    """A torch Dataset as is, or arrays/tensors ``(X, y, ...)`` as a TensorDataset (floats as float32)."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)) or len(data) < 1:
        raise ArgumentTypeError(
            f"{what} must be a torch Dataset or a tuple (X, y, ...), got {type(data).__name__}"
        )
    tensors = [_tensor(part) for part in data]
    sizes = {len(t) for t in tensors}
    if len(sizes) != 1:
        raise ParameterError(f"{what}: the arrays have different lengths {[len(t) for t in tensors]}")
    return TensorDataset(*tensors)


def _tensor(part: Any) -> torch.Tensor:
    t = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


def _optimizer(trainer: Trainer) -> torch.optim.Optimizer:
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    if callable(trainer.optimizer):
        return trainer.optimizer(params)
    cls = OPTIMIZERS[trainer.optimizer]
    extra: dict[str, Any] = {"momentum": 0.9} if trainer.optimizer == "sgd" else {}
    return cls(params, lr=trainer.lr, weight_decay=trainer.weight_decay, **extra)


def _scheduler(name: str | None, optimizer: torch.optim.Optimizer, lr: float, total: int) -> Any:
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total, 1))
    return None


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    """The history as CSV text, one row per epoch (the columns of the first row, then any others)."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()
