"""Atomic writes: the old file or the new one, never half of one, with the usual file mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelfusion.files import (
    atomic_path,
    current_umask,
    defer_interrupts,
    replace_all,
    replace_dir,
    write_bytes_atomic,
)


def test_written_files_get_the_mode_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_bytes_atomic(tmp_path / "a.bin", b"data")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_bytes_atomic(tmp_path / "a.txt", b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_replace_dir_swaps_a_folder_whole(tmp_path):
    old, new = tmp_path / "bundle", tmp_path / "staged"
    old.mkdir()
    (old / "stale.onnx").write_text("x")
    new.mkdir()
    (new / "fresh.onnx").write_text("y")
    replace_dir(new, old)
    assert [p.name for p in old.iterdir()] == ["fresh.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_current_umask_reads_without_changing_it():
    old = os.umask(0o077)
    try:
        assert current_umask() == 0o077
        assert current_umask() == 0o077
    finally:
        os.umask(old)


def test_ctrl_c_inside_defer_interrupts_arrives_when_the_block_ends():
    import signal

    steps = []
    with pytest.raises(KeyboardInterrupt), defer_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("renamed")
        steps.append("recorded")
    assert steps == ["renamed", "recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_defer_interrupts_restores_python_default_when_the_old_handler_was_foreign(monkeypatch):
    import signal

    real = signal.signal
    calls = []

    def foreign_first(signum, handler):  # signal.signal returns None for a handler set from C
        previous = real(signum, handler)
        calls.append(handler)
        return None if len(calls) == 1 else previous

    monkeypatch.setattr(signal, "signal", foreign_first)
    with defer_interrupts():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_replace_all_undoes_every_move_when_one_fails(tmp_path):
    out, stage = tmp_path / "out", tmp_path / "stage"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "old.onnx").write_text("old bundle")
    (out / "report.html").write_text("old report")
    (stage / "bundle").mkdir(parents=True)
    (stage / "bundle" / "new.onnx").write_text("new bundle")
    moves = [
        (stage / "bundle", out / "bundle"),
        (None, out / "report.html"),
        (stage / "missing.md", out / "report.md"),  # fails: nothing to move
    ]
    with pytest.raises(FileNotFoundError):
        replace_all(moves)
    assert [p.name for p in (out / "bundle").iterdir()] == ["old.onnx"]
    assert (out / "report.html").read_text() == "old report"
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "report.html"]  # nothing hidden left


def test_replace_all_replaces_removes_and_cleans_up(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    (tmp_path / "new-a.txt").write_text("new a")
    replace_all([(tmp_path / "new-a.txt", tmp_path / "a.txt"), (None, tmp_path / "b.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "new a"
