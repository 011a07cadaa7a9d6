"""Put right what a killed command left behind, and let one command at a time write a bundle.

Every write is a temporary file or folder renamed into place (:mod:`modelfusion.files`), and
every replacement moves the old entry aside first. A SIGKILL (or power loss) between two
renames leaves one of these, which the next command that writes the bundle resolves before
it starts:

- ``.NAME.old-<hex>`` beside ``NAME`` (``replace_all``): restored when ``NAME`` is gone (the
  kill came between "old moved aside" and "new moved in"), removed otherwise;
- ``.NAME.<random>.tmp`` and ``.run-<random>.tmp`` (a save or a run's staging folder): removed;
- inside a bundle, ``.fused.onnx.old-<hex>`` (``staged_bundle_file``): put back when it is the
  file the manifest records and the file in its place is not, removed otherwise.

:class:`bundle_lock` serialises the writers of one bundle: a second ``run``, ``export`` or
``quantize`` on it fails at once with a clear message instead of interleaving renames.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from modelfusion.errors import BundleError
from modelfusion.files import remove_path
from modelfusion.manifest import parse_manifest
from modelfusion.members.base import sha256_file

_ASIDE = re.compile(r"^\.(?P<name>.+)\.old-[0-9a-f]{12}$")
_TEMPORARY = re.compile(r"^\.(.+\.[^.]+\.tmp(\.[A-Za-z0-9]+)?|run-.+\.tmp)$")


class bundle_lock:
    """Hold an exclusive lock on the bundle at ``path`` (a ``.NAME.lock`` file beside it, removed on release).

    Raises BundleError at once when another process holds it. Where the platform has no
    ``fcntl`` (Windows) the block runs unlocked.

    Examples
    --------
    >>> with bundle_lock("runs/demo/results/bundle"):
    ...     quantize_bundle("runs/demo/results/bundle", "dynamic", data=(X, y))
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path.parent / f".{path.name}.lock"
        self.bundle = path
        self._fd: int | None = None

    def __enter__(self) -> bundle_lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise BundleError(
                    f"{self.bundle} is being written by another modelfusion command (lock {self.path}); "
                    "wait for it to finish"
                ) from None
            # The holder before us removes the file when it is done: lock the file that is
            # still at the path, or try again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # no lock file stays beside the bundle
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def recover_folder(folder: str | Path, names: Collection[str] | None = None) -> list[str]:
    """Resolve interrupted replacements and remove temporaries directly in ``folder``; what was done.

    ``names``: only leftovers of these entries are touched (a bundle's folder may hold other
    people's files); None for every leftover (inside a bundle, all of them are ours).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    actions = []
    for entry in sorted(folder.iterdir()):
        aside = _ASIDE.match(entry.name)
        if names is not None and not _ours(entry.name, names):
            continue
        if aside:
            target = folder / aside.group("name")
            if target.exists() or target.is_symlink():
                remove_path(entry)
                actions.append(f"removed {entry.name} (left by an interrupted replacement of {target.name})")
            else:
                os.replace(entry, target)
                actions.append(f"restored {target} (an interrupted command had moved it aside)")
        elif _TEMPORARY.match(entry.name):
            remove_path(entry)
            actions.append(f"removed {entry.name} (a temporary file of an interrupted command)")
    return actions


def recover_bundle(path: str | Path) -> list[str]:
    """Recover the bundle at ``path`` and its folder after an interrupted write; what was done.

    Beside the bundle: see :func:`recover_folder`. Inside it, an old graph kept aside while a
    new one was recorded is put back when it is what the manifest records and the file in its
    place is not (the kill came between the rename and the manifest update).
    """

    path = Path(path)
    actions = recover_folder(path.parent, [path.name])
    if not path.is_dir():
        return actions
    try:
        checksums = parse_manifest(path)["checksums"]
    except BundleError:
        checksums = {}
    for entry in sorted(path.iterdir()):
        aside = _ASIDE.match(entry.name)
        if aside and entry.is_file():
            target = path / aside.group("name")
            recorded = checksums.get(target.name)
            if (
                recorded is not None
                and sha256_file(entry) == recorded
                and (not target.is_file() or sha256_file(target) != recorded)
            ):
                os.replace(entry, target)
                actions.append(
                    f"restored {target.name} in {path} (the recorded graph; the unrecorded one is dropped)"
                )
            else:
                remove_path(entry)
                actions.append(f"removed {entry.name} from {path} (left by an interrupted update)")
        elif _TEMPORARY.match(entry.name):
            remove_path(entry)
            actions.append(f"removed {entry.name} from {path} (a temporary file of an interrupted command)")
    return actions


def _ours(entry: str, names: Collection[str]) -> bool:
    if entry.startswith(".run-") and entry.endswith(".tmp"):
        return True
    return any(entry.startswith(f".{name}.") for name in names)
