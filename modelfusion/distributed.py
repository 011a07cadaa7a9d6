"""Split an ensemble across worker processes: each loads and scores its share, rank 0 gathers.

Under ``torchrun`` (or Horovod) every process runs the same script. :func:`load_model_partition`
gives each one its own members, balanced by parameter count; :func:`score_members_distributed`
scores those members locally and gathers one :class:`~modelfusion.predictions.PredictionSet`
on rank 0, equal to what :func:`~modelfusion.predictions.score_members` returns in one process.

Examples
--------
>>> # torchrun --nproc-per-node 2 score.py
>>> preds = score_members_distributed(["cnn.pt2", "vit.pt2", "logreg.skops"], X_val, y=y_val)
>>> if preds is not None:  # rank 0
...     preds.save("val_preds.npz")
"""

from __future__ import annotations

import atexit
import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import ArgumentTypeError, ParameterError, PredictionError
from modelfusion.members.base import Member
from modelfusion.members.loading import load_member
from modelfusion.predictions import (
    PredictionSet,
    assemble_predictions,
    check_member_list,
    score_each,
)

__all__ = ["balance_partition", "load_model_partition", "resolve_rank", "score_members_distributed"]


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's ``(rank, world_size)``: the arguments, else the launcher's, else ``(0, 1)``.

    Looked up in order: torchrun's ``RANK``/``WORLD_SIZE`` environment variables, an
    initialised ``torch.distributed`` process group, then Horovod (``horovod.torch``, used
    only when it is installed and initialised; never required).

    Raises
    ------
    ValueError
        world_size < 1, or rank outside ``0..world_size-1``.
    """
    if rank is None or world_size is None:
        found = _launcher_rank()
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    rank, world_size = int(rank), int(world_size)
    if world_size < 1:
        raise ParameterError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ParameterError(f"rank {rank} is outside 0..{world_size - 1} for world_size={world_size}")
    return rank, world_size


def balance_partition(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Indices of the items each rank gets, balancing the summed cost (greedy, deterministic).

    Items are taken largest first (ties by index) and each goes to the rank with the
    lightest load so far (ties by rank): the longest-processing-time rule, within 4/3 of the
    best possible maximum load (Graham, 1969). Every index appears exactly once; each rank's
    list is in ascending order.

    Examples
    --------
    >>> balance_partition([10, 1, 1, 8], world_size=2)
    [[0], [1, 2, 3]]
    """
    if world_size < 1:
        raise ParameterError(f"world_size must be >= 1, got {world_size}")
    loads = [0.0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        loads[r] += float(costs[i])
        shares[r].append(i)
    return [sorted(share) for share in shares]


def load_model_partition(
    rank: int | None = None,
    world_size: int | None = None,
    members: Sequence[Member | Any] | Mapping[str, Member | Any] | None = None,
    *,
    allow_idle: bool = False,
    **options: Any,
) -> list[Member]:
    """This worker's share of the ensemble, balanced by parameter count across workers.

    Every member lands on exactly one rank, and every rank computes the same assignment, so
    the processes need not talk to each other. Members given as paths are weighed by file
    size and only this rank's share is loaded.

    Parameters
    ----------
    rank, world_size : int, optional
        Default: from the launcher (see :func:`resolve_rank`); ``(0, 1)`` in a plain process.
    members : members, objects or paths :func:`~modelfusion.load_member` understands, or a
        ``{name: member}`` dict. Every rank must pass the same members in the same order.
    allow_idle : bool
        Allow more workers than members; then some ranks get an empty list.
    **options
        Passed to :func:`~modelfusion.load_member` for members that are not loaded yet
        (``device=f"cuda:{local_rank}"``, ``trust=True``, ...).

    Returns
    -------
    list of Member, in the order they were given.

    Raises
    ------
    ValueError
        no members; world_size larger than the number of members without ``allow_idle``;
        rank outside ``0..world_size-1``.

    Examples
    --------
    >>> load_model_partition(0, 2, [big_cnn, small_mlp, logreg])   # on rank 0 of 2
    [TorchMember(name='big_cnn', ...)]
    """
    items = _items(members)
    rank, world_size = resolve_rank(rank, world_size)
    share = _share(items, rank, world_size, allow_idle)
    return [_load(items[i], options) for i in share]


def score_members_distributed(
    members: Sequence[Member | Any] | Mapping[str, Member | Any],
    data: Any,
    *,
    y: np.ndarray | Sequence[Any] | None = None,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    allow_idle: bool = False,
    all_ranks: bool = False,
    trust: bool = False,
) -> PredictionSet | None:
    """:func:`~modelfusion.score_members` with the members spread over worker processes.

    Each rank scores its share (see :func:`load_model_partition`); rank 0 gathers the raw
    outputs and assembles one :class:`PredictionSet` with the members in the order given,
    equal to the single-process result. Run it on every rank with the same arguments. It
    uses the default ``torch.distributed`` process group; when there is none it starts one
    with the gloo backend from torchrun's environment and keeps it for later calls (tearing
    down and restarting groups between calls races on some ranks), destroying it at exit.
    With one process it is :func:`~modelfusion.score_members`.

    Parameters
    ----------
    members, data, y, batch_size, cache_dir, progress
        As for :func:`~modelfusion.score_members`; ``data`` must be available on every rank.
    rank, world_size : int, optional
        Default: from the launcher (see :func:`resolve_rank`).
    allow_idle : bool
        Allow more workers than members.
    all_ranks : bool
        Return the PredictionSet on every rank, not only on rank 0.
    trust : bool
        Passed to :func:`~modelfusion.load_member` for members given as paths (TorchScript,
        pickles: files you made yourself).

    Returns
    -------
    PredictionSet on rank 0 (on every rank with ``all_ranks=True``), None on the others.

    Raises
    ------
    PredictionError
        on every rank, when any rank's member fails or the members disagree (as in
        ``score_members``).
    """
    items = _items(members)
    rank, world_size = resolve_rank(rank, world_size)
    share = _share(items, rank, world_size, allow_idle)
    if all(isinstance(m, Member) for m in items):
        check_member_list(items)  # every rank holds the same members: all fail alike, before any talk
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    if world_size == 1:
        local = [_load(item, {"trust": trust}) for item in items]
        check_member_list(local)
        results, metadata = score_each(local, data, batch_size=batch_size, cache=cache, progress=progress)
        return assemble_predictions(local, results, y=y, metadata=metadata, cache=cache)

    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise ParameterError(
                f"rank {rank} of {world_size}: score_members_distributed talks through torch.distributed, "
                "but there is no process group and no MASTER_ADDR/MASTER_PORT to start one. Launch with "
                "torchrun --nproc-per-node N, or call torch.distributed.init_process_group first (under "
                "Horovod, use load_model_partition and gather the outputs with hvd.allgather_object)."
            )
        dist.init_process_group(backend="gloo", rank=rank, world_size=world_size)
        atexit.register(_destroy_process_group)
    payload = _score_share(
        items, share, data, rank=rank, batch_size=batch_size, cache=cache, progress=progress, trust=trust
    )
    gathered: list[Any] | None
    if all_ranks:
        everyone: list[Any] = [None] * world_size
        dist.all_gather_object(everyone, payload)
        gathered = everyone
    else:
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(payload, gathered, dst=0)
    result, failure, error = None, None, None
    if gathered is not None:
        try:
            result = _assemble(gathered, y=y, cache=cache)
        except Exception as exc:
            failure = exc
            error = str(exc) if isinstance(exc, PredictionError) else f"{type(exc).__name__}: {exc}"
    if not all_ranks:  # only rank 0 knows whether assembly failed: tell everyone
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise PredictionError(error)
    return result


# -- internals --------------------------------------------------------------------------------


@dataclass
class _Scored:
    """What a rank sends for one member: enough to assemble, without the model itself."""

    index: int
    name: str
    task: str
    output_kind: str
    classes: np.ndarray | None
    outputs: np.ndarray
    metadata: dict[str, Any]


def _score_share(
    items: list[Any],
    share: list[int],
    data: Any,
    *,
    rank: int,
    batch_size: int,
    cache: Path | None,
    progress: bool | None,
    trust: bool = False,
) -> dict[str, Any]:
    """This rank's scored members, or the error that stopped it (sent on, so no rank hangs)."""
    try:
        local = [_load(items[i], {"trust": trust}) for i in share]
        results, metadata = score_each(local, data, batch_size=batch_size, cache=cache, progress=progress)
    except Exception as exc:  # any failure must reach rank 0, or the gather would wait forever
        names = ", ".join(_label(items[i]) for i in share)
        return {"error": f"rank {rank} ({names}): {type(exc).__name__}: {exc}", "scored": []}
    scored = [
        _Scored(i, m.name, m.task, m.output_kind, m.classes, np.array(out), metadata[m.name])
        for i, m, out in zip(share, local, results)
    ]
    return {"error": None, "scored": scored}


def _assemble(gathered: list[dict[str, Any]], *, y: Any, cache: Path | None) -> PredictionSet:
    errors = [p["error"] for p in gathered if p["error"] is not None]
    if errors:
        raise PredictionError("distributed scoring failed: " + "; ".join(errors))
    scored = sorted((s for p in gathered for s in p["scored"]), key=lambda s: s.index)
    check_member_list(scored)
    metadata = {s.name: s.metadata for s in scored}
    return assemble_predictions(scored, [s.outputs for s in scored], y=y, metadata=metadata, cache=cache)


def _items(members: Any) -> list[Any]:
    if members is None:
        raise ParameterError("load_model_partition needs members= (members, model objects or paths)")
    if isinstance(members, Mapping):
        items = [_Named(str(n), m) for n, m in members.items()]
    elif isinstance(members, (str, os.PathLike)):
        raise ArgumentTypeError(f"members must be a list or dict of members, got one path {str(members)!r}")
    else:
        items = list(members)
    if not items:
        raise ParameterError("members is empty; give at least one member to partition")
    return items


@dataclass
class _Named:
    name: str
    source: Any


def _share(items: list[Any], rank: int, world_size: int, allow_idle: bool) -> list[int]:
    if world_size > len(items) and not allow_idle:
        names = ", ".join(_label(item) for item in items)
        raise ParameterError(
            f"world_size={world_size} is larger than the number of members ({len(items)}: {names}); "
            f"{world_size - len(items)} rank(s) would have nothing to do. Launch at most {len(items)} "
            "processes, or pass allow_idle=True to let the extra ranks sit idle."
        )
    return balance_partition([_cost(item) for item in items], world_size)[rank]


def _cost(item: Any) -> float:
    """Parameter count of a member or model; else file size / 4 (float32 weights); else 1."""
    source = item.source if isinstance(item, _Named) else item
    if isinstance(source, Member):
        return float(source.n_parameters or (source.file_size or 0) / 4.0 or 1.0)
    n = _object_parameters(source)
    if n:
        return float(n)
    if isinstance(source, (str, os.PathLike)) and Path(source).exists():
        path = Path(source)
        size = (
            sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
        return max(size / 4.0, 1.0)
    return 1.0


def _object_parameters(obj: Any) -> int | None:
    parameters = getattr(obj, "parameters", None)
    if callable(parameters):  # an nn.Module
        try:
            return sum(p.numel() for p in parameters())
        except TypeError:
            return None
    count = getattr(obj, "count_params", None)  # a keras.Model
    return int(count()) if callable(count) else None


def _load(item: Any, options: dict[str, Any]) -> Member:
    if isinstance(item, _Named):
        if isinstance(item.source, Member):
            return load_member(item.source, name=item.name)
        return load_member(item.source, name=item.name, **options)
    return item if isinstance(item, Member) else load_member(item, **options)


def _label(item: Any) -> str:
    if isinstance(item, (_Named, Member)):
        return item.name
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name
    return type(item).__name__


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _launcher_rank() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    horovod = _horovod()
    if horovod is not None:
        return horovod
    return 0, 1


def _horovod() -> tuple[int, int] | None:
    """``(hvd.rank(), hvd.size())`` when Horovod is installed and initialised, else None."""
    try:
        if importlib.util.find_spec("horovod") is None:
            return None
        import horovod.torch as hvd
    except (ImportError, ValueError):
        return None
    try:
        return int(hvd.rank()), int(hvd.size())
    except Exception:  # not initialised (hvd.init() not called): not a Horovod run
        return None
