"""Optional TensorBoard logging for the training engine: one scalar per history column per epoch.

:class:`~modelfusion.training.Trainer` writes through this when given ``tensorboard_dir=``
(``pip install "modelfusion[tensorboard]"``). Only rank 0 writes under torchrun. A resumed run
purges the events after its checkpoint's epoch, so a run killed between logging and
checkpointing shows each epoch once.

Examples
--------
>>> with EpochLog("runs/tb", start_epoch=1) as log:
...     log.write({"epoch": 1, "train_loss": 0.3, "val_loss": 0.4, "lr": 1e-3})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelfusion.dependencies import require

#: History columns that are not curves.
SKIPPED = ("epoch",)


def check_tensorboard() -> None:
    """MissingDependencyError naming the extra when TensorBoard is not installed."""
    require("tensorboard", purpose="tensorboard_dir= (TensorBoard logging)", extra="tensorboard")


class EpochLog:
    """A context manager writing each epoch's history row as TensorBoard scalars (``train/...``).

    ``log_dir=None`` (or ``enabled=False``: ranks other than 0) writes nothing.
    """

    def __init__(self, log_dir: str | Path | None, *, start_epoch: int, enabled: bool = True):
        self.writer: Any = None
        if log_dir is not None and enabled:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=start_epoch)

    def write(self, row: Mapping[str, Any]) -> None:
        """Every numeric column of ``row`` at step ``row["epoch"]``."""
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key in SKIPPED or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self.writer.add_scalar(key, float(value), epoch)
        self.writer.flush()

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
