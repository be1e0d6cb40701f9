"""Atomic file and folder writes: write to a temporary name in the same folder, fsync, then rename.

A reader (the explorer polling data.js, a resumed run reading the journal) never sees half a file.
Every file and folder gets the permissions the user's umask gives a new file, as `open` would.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            found = re.search(r"^Umask:\s*([0-7]+)", status.read(), re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _create_temp(path: Path) -> tuple[int, Path]:
    # mkstemp would make the file 0600 whatever the umask; an exclusive create with 0666 honours it.
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
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
    """Append one line and fsync, so a line on disk is a whole line (the journal's guarantee).

    A file cut short mid-line (power loss, a full disk) gets a newline first, so the torn line stays
    one unreadable line and the new one is whole.
    """
    with open(path, "a+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        torn = end > 0 and os.pread(handle.fileno(), 1, end - 1) != b"\n"
        handle.write((b"\n" if torn else b"") + line.rstrip("\n").encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def replace_dir(path: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to `path`; on success it replaces `path` (modes as the umask gives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        staged.mkdir()
        yield staged
        keep = ~current_umask()
        for item in staged.rglob("*"):
            item.chmod((0o777 if item.is_dir() else 0o666) & keep)
        if path.exists():
            shutil.rmtree(path)
        staged.rename(path)
