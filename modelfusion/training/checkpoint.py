"""Training checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

One file, ``last.pt``, replaced whole after every epoch (temp file + rename): a run killed at any
moment leaves the previous epoch's checkpoint intact. It holds the model, optimizer, scheduler
and gradient-scaler states, every random-number generator the run draws from, the early-stopping
state (with the best weights), the per-epoch history, and the configuration the run was started
with: resuming under a different configuration is refused with the fields that differ.

Checkpoints hold tensors and plain Python values only, and load with ``weights_only=True``:
reading one never runs code.

Examples
--------
>>> save_checkpoint(Path("ckpt/last.pt"), {"epoch": 3, "model": model.state_dict(), ...})
>>> state = load_checkpoint(Path("ckpt/last.pt"), config={"lr": 0.001, ...})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from modelfusion.errors import CheckpointError
from modelfusion.files import atomic_path

FORMAT = 1
LAST = "last.pt"


def config_digest(config: Mapping[str, Any]) -> str:
    """A sha256 of a run's configuration (JSON, sorted keys): what a checkpoint is tied to."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a reader sees the old file or the new one, never half)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: Path, *, config: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against ``config`` (the run about to resume).

    Raises :class:`CheckpointError` for a file that is not a checkpoint of ours, or one written
    under another configuration (naming each field that differs, with both values).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises its own types
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(
            f"{str(path)!r} is not a modelfusion training checkpoint; delete it to start over"
        )
    saved = state["config"]
    if config_digest(saved) != config_digest(config):
        differ = [
            f"{key} (checkpoint {saved.get(key)!r}, now {config.get(key)!r})"
            for key in sorted(set(saved) | set(config))
            if json.dumps(saved.get(key), default=str) != json.dumps(config.get(key), default=str)
        ]
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by a run with a different configuration: "
            f"{'; '.join(differ)}. Use the same settings to resume, or another checkpoint_dir to start over"
        )
    return state
