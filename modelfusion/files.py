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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move the folder ``src`` onto ``dst``, replacing a folder already there.

    The old folder is renamed aside first and put back if the move fails, so ``dst`` is
    always either the old folder or the new one.
    """
    replace_all([(Path(src), Path(dst))])


def replace_all(moves: list[tuple[Path | None, Path]]) -> None:
    """Move each ``src`` onto its ``dst`` (files or folders; ``src=None`` removes ``dst``), all or none.

    Whatever is at a ``dst`` is renamed aside first (under a name no other call uses). If a
    move fails, the moves done so far are undone and the old entries put back, then the
    error is raised; on success the old entries are deleted, last. Every path must be on the
    filesystem of its ``dst`` (renames only).

    Examples
    --------
    >>> replace_all([(stage / "bundle", out / "bundle"), (stage / "report.html", out / "report.html")])
    """
    done: list[tuple[Path, Path | None, bool]] = []  # (dst, where the old entry went, moved in)
    try:
        for src, dst in moves:
            aside = None
            if dst.exists() or dst.is_symlink():
                aside = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:12]}")
                os.replace(dst, aside)
            done.append((dst, aside, False))
            if src is not None:
                os.replace(src, dst)
                done[-1] = (dst, aside, True)
    except BaseException:
        for dst, aside, moved in reversed(done):
            if moved:
                remove_path(dst)
            if aside is not None:
                os.replace(aside, dst)
        raise
    for _, aside, _ in done:
        if aside is not None:
            remove_path(aside)


def remove_path(path: Path) -> None:
    """Delete a file, link or folder (a link is removed, never followed); nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


#: Signals that end a command the way Ctrl-C does: cleanup runs, nothing is left half-written.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def terminate_as_interrupt() -> None:
    """Make SIGTERM (``kill``, a container stop) raise KeyboardInterrupt like Ctrl-C.

    Called by the CLI, so a terminated command unwinds through the same cleanup as an
    interrupted one. Outside the main thread this does nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def defer_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, for steps that must finish together.

    Used around "rename a file into a bundle, then record its checksum": interrupted between
    the two, a bundle would fail verification. A signal received during the block is
    delivered (as ``KeyboardInterrupt``, or to the handler that was installed) when it ends.
    Outside the main thread, where Python cannot install signal handlers, the block runs as
    it is. (SIGKILL cannot be held: :mod:`modelfusion.recovery` puts its leftovers right.)

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
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in INTERRUPTS}
    for sig, handler in previous.items():
        if handler is None:  # a handler installed outside Python: restore Python's default
            previous[sig] = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            first = signal.Signals(received[0])
            handler = previous[first]
            if callable(handler) and handler is not signal.default_int_handler:
                handler(first, None)
            elif handler == signal.SIG_DFL and first == signal.SIGTERM:
                signal.raise_signal(first)  # the default action: end the process
            elif handler != signal.SIG_IGN:
                raise KeyboardInterrupt
