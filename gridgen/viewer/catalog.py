"""Owns what the viewer knows about the root folder: which grids are under it, what each grid's
grid.json says, and how a URL path maps to a file inside the root without ever leaving it.

A grid is a folder holding `grid.json`, at most `MAX_DEPTH` levels below the root. A grid's id is
its folder relative to the root in POSIX form (`""` when the root itself is a grid). Hidden names
(starting with a dot: the viewer's SQLite file, a grid's `.cache/`) are never served or listed.
"""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_DEPTH = 4
MAX_DIRS_SCANNED = 20_000
STRIP_THUMBS = 8
GRID_FILE = "grid.json"
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePath(ValueError):
    """A requested path that could point outside the root: `..`, a backslash, an absolute path."""


def split_relative(rel: str) -> list[str]:
    """The components of a URL path relative to the root; raises UnsafePath for anything that could
    climb out of it (`..`, `.`, absolute paths, backslashes, drive letters, NUL, empty components)."""
    if "\\" in rel or "\x00" in rel:
        raise UnsafePath("backslashes and NUL are not allowed in paths")
    if rel.startswith("/"):
        raise UnsafePath("absolute paths are not allowed")
    parts = rel.split("/") if rel else []
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath("empty, '.' and '..' path components are not allowed")
    if parts and _DRIVE.match(parts[0]):
        raise UnsafePath("drive letters are not allowed")
    return parts


def is_hidden(parts: list[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies in (or is) the resolved `root`."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real == root or root in real.parents


def resolve_inside(root: Path, parts: list[str]) -> Path | None:
    """The existing file or folder `root/parts...` if it (symlinks resolved) stays in `root`, else None."""
    candidate = root.joinpath(*parts)
    return candidate if inside(root, candidate) else None


def grid_folder_of(root: Path, path: Path) -> Path | None:
    """The grid folder holding `path` (itself, or the nearest ancestor with grid.json) inside `root`."""
    folder = path if path.is_dir() else path.parent
    while True:
        if (folder / GRID_FILE).is_file() and inside(root, folder / GRID_FILE):
            return folder
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


def grid_id(root: Path, folder: Path) -> str:
    rel = folder.relative_to(root)
    return "" if str(rel) == "." else rel.as_posix()


def grid_path(root: Path, gid: str) -> Path | None:
    """The folder of grid `gid` if it is a grid inside root, else None (also for unsafe ids)."""
    try:
        parts = split_relative(gid)
    except UnsafePath:
        return None
    if is_hidden(parts):
        return None
    folder = resolve_inside(root, parts)
    if folder is None or not folder.is_dir() or not (folder / GRID_FILE).is_file():
        return None
    return folder if inside(root, folder / GRID_FILE) else None


def find_grids(root: Path) -> list[str]:
    """Ids of every grid under `root`, searched MAX_DEPTH levels deep; grid folders are not descended."""
    found: list[str] = []
    scanned = 0
    pending = [(root, 0)]
    while pending and scanned < MAX_DIRS_SCANNED:
        folder, depth = pending.pop()
        scanned += 1
        if (folder / GRID_FILE).is_file() and inside(root, folder / GRID_FILE):
            found.append(grid_id(root, folder))
            continue
        if depth >= MAX_DEPTH:
            continue
        try:
            with os.scandir(folder) as listing:
                children = [Path(e.path) for e in listing if not e.name.startswith(".") and e.is_dir()]
        except OSError:
            continue
        pending.extend((child, depth + 1) for child in sorted(children, reverse=True) if inside(root, child))
    return sorted(found)


def grid_url_path(gid: str, file: str = "") -> str:
    """The URL path (below the app's /g/ prefix) of a grid folder or of a file in it, quoted."""
    rel = "/".join(part for part in (gid, file) if part)
    return quote(rel, safe="/")


class GridCache:
    """grid.json files parsed once per change (keyed by path, mtime and size). Thread-safe."""

    def __init__(self, limit: int = 64):
        self._lock = threading.Lock()
        self._items: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._limit = limit

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(path)
            if hit and hit[0] == stamp:
                return hit[1]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        with self._lock:
            if len(self._items) >= self._limit:
                self._items.pop(next(iter(self._items)))
            self._items[path] = (stamp, data)
        return data


def _mtime(folder: Path) -> float:
    times = []
    for name in (GRID_FILE, "journal.jsonl", "data.js"):
        try:
            times.append((folder / name).stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def progress_of(data: dict[str, Any]) -> dict[str, Any]:
    cells = data.get("cells") or {}
    progress = data.get("progress") if isinstance(data.get("progress"), dict) else {}
    return {
        "total": int(progress.get("total") or len(cells)),
        "done": int(progress.get("done") or len(cells)),
        "skipped": int(progress.get("skipped") or 0),
        "failed": int(progress.get("failed") or 0),
        "running": bool(progress.get("running")),
        "updated": progress.get("updated"),
    }


def summary(root: Path, gid: str, cache: GridCache) -> dict[str, Any] | None:
    """What the index shows of one grid: title, progress, a strip of thumbnails, last modified."""
    folder = grid_path(root, gid)
    if folder is None:
        return None
    data = cache.read(folder / GRID_FILE)
    modified = _mtime(folder)
    base = {"id": gid, "url": grid_url_path(gid), "modified": modified,
            "modified_iso": datetime.fromtimestamp(modified, timezone.utc).isoformat(timespec="seconds")}
    broken = {**base, "title": gid or root.name, "thumbs": [], "axes": [], **progress_of({})}
    if data is None:
        return {**broken, "error": "grid.json cannot be read"}
    try:
        return {**base, **_described(root, gid, data)}
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as err:  # JSON, but not gridgen's
        return {**broken, "error": f"grid.json is malformed ({type(err).__name__}); run `gridgen html` on the folder "
                                   "or render it again"}


def _described(root: Path, gid: str, data: dict[str, Any]) -> dict[str, Any]:
    cells = data.get("cells") if isinstance(data.get("cells"), dict) else {}
    keys = list(cells)
    picked = [keys[i * len(keys) // STRIP_THUMBS] for i in range(min(STRIP_THUMBS, len(keys)))]
    thumbs = []
    for key in picked:
        cell = cells[key] if isinstance(cells[key], dict) else {}
        file = cell.get("thumb") or cell.get("image")
        if isinstance(file, str) and file:
            thumbs.append({"key": key, "url": grid_url_path(gid, file)})
    axes = [str(a.get("title") or a.get("id")) for a in data.get("axes") or [] if isinstance(a, dict)]
    return {"title": str(data.get("title") or gid or root.name), "error": None, "thumbs": thumbs, "axes": axes,
            **progress_of(data)}


def cell_of(root: Path, gid: str, key: str, cache: GridCache) -> dict[str, Any] | None:
    """The cell `key` of grid `gid` as grid.json lists it, or from the journal when newer; None if absent."""
    folder = grid_path(root, gid)
    if folder is None:
        return None
    data = cache.read(folder / GRID_FILE) or {}
    cells = data.get("cells") if isinstance(data.get("cells"), dict) else {}
    if isinstance(cells.get(key), dict):
        return cells[key]
    from gridgen.store import read_journal

    entry = read_journal(folder / "journal.jsonl").get(key)
    if entry is None:
        return None
    return {"image": entry.get("file"), "thumb": entry.get("thumb"), "seed": entry.get("seed"),
            "params": entry.get("params", {}), "parameters": entry.get("parameters", "")}
