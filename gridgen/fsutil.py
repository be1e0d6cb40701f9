"""Atomic file and folder writes: write to a temporary name in the same folder, fsync, then rename.

A reader (the explorer polling data.js, a resumed run reading the journal) never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync, so a line on disk is a whole line (the journal's guarantee)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def replace_dir(path: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to `path`; on success it replaces `path` (files world-readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        staged.mkdir()
        yield staged
        for item in staged.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
        if path.exists():
            shutil.rmtree(path)
        staged.rename(path)
