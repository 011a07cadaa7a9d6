"""Atomic file writes: a temporary file in the target's folder, renamed onto it on success.

Every file the library writes (bundles, graphs, caches, reports) goes through here, so a
reader sees the old file or the new one, never half of one, and every file gets the mode a
plain ``open(..., "w")`` would give (``mkstemp`` alone creates them 0600).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


class atomic_path:
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    Nothing is left at ``path`` if the block raises (or is interrupted); the file gets the
    usual mode (0666 less the umask).

    Examples
    --------
    >>> with atomic_path("out/table.csv") as tmp:
    ...     Path(tmp).write_text("a,b\\n1,2\\n")
    """

    def __init__(self, path: str | Path, suffix: str = ".tmp"):
        self.path = Path(path)
        self.suffix = suffix

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=self.suffix, dir=self.path.parent
        )
        os.close(fd)
        os.chmod(self.tmp, 0o666 & ~current_umask())
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :class:`atomic_path`); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_dir(src: str | Path, dst: str | Path, *, discard_old: bool = True) -> Path | None:
    """Move the folder ``src`` onto ``dst``, replacing a folder already there.

    The old folder is renamed aside first and put back if the move fails, so ``dst`` is
    always either the old folder or the new one. With ``discard_old=False`` the old folder is
    left aside and its path returned (None when there was none), for a caller that moves
    several things and deletes the old ones only once all are in place.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return None
    backup = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, backup)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(backup, dst)
        raise
    if not discard_old:
        return backup
    shutil.rmtree(backup, ignore_errors=True)
    return None


@contextlib.contextmanager
def defer_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, for steps that must finish together.

    Used around "rename a file into a bundle, then record its checksum": interrupted between
    the two, a bundle would fail verification. A Ctrl-C during the block is delivered (as
    ``KeyboardInterrupt``, or to the handler that was installed) when it ends. Outside the main
    thread, where Python cannot install signal handlers, the block runs as it is.

    Examples
    --------
    >>> with defer_interrupts():
    ...     os.replace(tmp, target)
    ...     record(target)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    if previous is None:  # a handler installed outside Python: restore Python's default
        previous = signal.default_int_handler
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous) and previous is not signal.default_int_handler:
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
