"""Owns a grid's output folder: images, thumbnails, the journal, and the explorer's data.

Layout (see DESIGN.md): `index.html data.js grid.json spec.yaml journal.jsonl images/ thumbs/`.
Every file is written to a temporary name and renamed. A cell counts as done only when its image
exists and its journal line is on disk; the journal line is written last, so a run killed at any
moment resumes with nothing half-written taken for done. A cell that failed gets a journal line
marked `failed` (no image), which never counts as done, so a rerun tries it again. Each journal line
holds a hash of the cell's effective params: a resumed run whose spec or `--set` changed a cell's
params renders that cell again instead of keeping an image that no longer matches.

The JSON embedded in each image holds what the cell is (key, coords, params, the backend's
metadata), never how long it took: timings go to the journal line only, so the same cell rendered
by any executor gives a byte-identical file.

A result with 16-bit pixels (an HDR merge's `Result.deep`) is written as a 16-bit PNG with the same text chunks
(`deep_png`) when the cell's format is PNG; its thumbnail, metrics and journal hash use the 8-bit image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from PIL import Image

from gridgen import explorer
from gridgen.backends.base import Result
from gridgen.deep_png import encode_png16
from gridgen.fsutil import append_line, atomic_write_bytes, atomic_write_text
from gridgen.metadata import a1111_parameters, encode_image, portable_paths
from gridgen.metrics import Influence, numeric_fields
from gridgen.spec.model import GridSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gridgen.backends.base import Cell

THUMB_SIZE = 256
_DATA_INTERVAL_S = 1.0
_log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def params_hash(params: dict[str, Any]) -> str:
    """A digest of a cell's effective params, equal for the params and their JSON round trip."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Entries of finished cells by cell key; the lines of failed cells are ignored, and a line that does
    not parse (cut short by a kill, power loss or a full disk) is skipped with a warning."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if line.strip():
                _log.warning("%s:%d: not a whole journal line (a write cut short); skipped, so its cell is "
                             "rendered again", path, number)
            continue
        if isinstance(entry, dict) and "key" in entry and not entry.get("failed") and entry.get("file"):
            entries[entry["key"]] = entry
    return entries


def extra_path(image_path: str, name: str) -> str:
    """Where a cell's extra image `name` goes: next to its image, `images/a/b.png` -> `images/a/b.mask.png`."""
    return f"{image_path.rsplit('.', 1)[0]}.{name}.png"


def previous_random_seed(out_dir: Path) -> int | None:
    """The random seed an earlier run of this grid chose for `seed: -1`, so a resume keeps it."""
    try:
        return json.loads((Path(out_dir) / "grid.json").read_text(encoding="utf-8")).get("random_seed")
    except (OSError, ValueError, AttributeError):
        return None


class Store:
    """The output folder of one grid run. `write` may be called from several threads."""

    def __init__(self, out_dir: Path, spec: GridSpec, random_seed: int, overwrite: bool = False,
                 models_dir: Path | None = None):
        self.out_dir = Path(out_dir)
        # Paths in image metadata are recorded relative to these (the machine's own paths stay private).
        self.path_roots = [spec.folder.resolve(), *([Path(models_dir).resolve()] if models_dir else [])]
        self.spec = spec
        self.random_seed = random_seed
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._remove_temp_files()
        self.journal_path = self.out_dir / "journal.jsonl"
        if overwrite and self.journal_path.exists():
            self.journal_path.unlink()
        self.entries = {key: entry for key, entry in read_journal(self.journal_path).items()
                        if (self.out_dir / entry.get("file", "")).is_file()}
        self.progress = {"total": spec.cell_count, "done": len(self.entries), "skipped": 0, "failed": 0,
                         "running": False, "updated": _now()}
        self._lock = threading.Lock()
        self._last_data = 0.0
        self.influence = Influence([(axis.id, [v.id for v in axis.values]) for axis in spec.axes])
        atomic_write_text(self.out_dir / "spec.yaml",
                          yaml.safe_dump(spec.resolved, sort_keys=False, allow_unicode=True))

    def _remove_temp_files(self) -> None:
        for leftover in self.out_dir.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def is_done(self, key: str) -> bool:
        return key in self.entries

    def forget_changed(self, cells: Iterable[Cell]) -> str | None:
        """Stop counting as done the cells whose journalled params differ from `cells`' (the spec or `--set`
        changed since they were rendered), so they are rendered again; returns what changed, or None."""
        changed, names, example = 0, set(), ""
        for cell in cells:
            entry = self.entries.get(cell.key)
            if entry is None or entry.get("params_hash", params_hash(entry.get("params", {}))) == \
                    params_hash(cell.params):
                continue
            before = json.loads(json.dumps(entry.get("params", {}), default=str))
            after = json.loads(json.dumps(cell.params, default=str))
            differing = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
            names.update(differing)
            if not example and differing:
                example = f" (cell {cell.key}: {differing[0]} {before.get(differing[0])!r} -> " \
                          f"{after.get(differing[0])!r})"
            del self.entries[cell.key]
            changed += 1
        if not changed:
            return None
        with self._lock:
            self.progress["done"] = len(self.entries)
        return (f"{changed} cell(s) on disk were rendered with other params ({', '.join(sorted(names))}){example}; "
                "they are rendered again")

    def write(self, result: Result) -> None:
        """Encode and save one finished cell, then journal it. Safe to call from worker threads."""
        cell = result.cell
        params = cell.params
        fmt = params.get("format") or self.spec.meta.format
        image = result.image.convert("RGB")
        parameters = a1111_parameters(params, result.metadata)
        record = {"key": cell.key, "coords": list(cell.coords), "params": params,
                  "metadata": portable_paths(result.metadata, self.path_roots)}
        # An HDR merge's 16-bit pixels go into the file as they are where the format holds them (PNG).
        if result.deep is not None and fmt == "png":
            encoded = encode_png16(result.deep, parameters, record)
        else:
            encoded = encode_image(image, fmt, parameters, record)
        atomic_write_bytes(self.out_dir / cell.image_path, encoded)
        thumb = image.copy()
        thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
        thumb_bytes = encode_image(thumb, "webp", parameters, record)
        atomic_write_bytes(self.out_dir / cell.thumb_path, thumb_bytes)
        self.influence.add(cell.key, Image.open(io.BytesIO(thumb_bytes)))  # as a resumed run will read it
        files = {}
        for name, extra in result.files.items():  # a SAM edit's mask: images/<key>.mask.png; HDR brackets
            files[name] = extra_path(cell.image_path, name)
            atomic_write_bytes(self.out_dir / files[name], encode_image(extra, "png", parameters, record))
        entry = {
            **record, "timings": result.timings, "index": cell.index, "seed": params.get("seed"),
            "file": cell.image_path, "thumb": cell.thumb_path, "hash": hashlib.sha1(image.tobytes()).hexdigest(),
            "size": list(image.size), "params_hash": params_hash(params),
            "time": round(sum(result.timings.values()), 4), "parameters": parameters, "finished": _now(),
        }
        if files:
            entry["files"] = files
        line = json.dumps(entry, sort_keys=True, default=str)
        with self._lock:
            append_line(self.journal_path, line)
            self.entries[cell.key] = entry
            self.progress["done"] = len(self.entries)
        self.publish()

    def write_failure(self, cell: Cell, error: str) -> None:
        """Journal that `cell` failed, with the error; it stays not done, so a rerun renders it again."""
        line = json.dumps({"key": cell.key, "coords": list(cell.coords), "index": cell.index, "failed": True,
                           "error": error, "finished": _now()}, sort_keys=True, default=str)
        with self._lock:
            append_line(self.journal_path, line)

    def publish(self, force: bool = False, running: bool | None = None) -> None:
        """Rewrite data.js and grid.json (at most once a second unless forced)."""
        with self._lock:
            if running is not None:
                self.progress["running"] = running
            now = time.monotonic()
            if not force and now - self._last_data < _DATA_INTERVAL_S:
                return
            self._last_data = now
            self.progress["updated"] = _now()
            entries = dict(self.entries)
        self.influence.catch_up(self.out_dir, {key: entry["thumb"] for key, entry in entries.items()})
        with self._lock:
            data = self.page_data()
        explorer.write_data(self.out_dir, data)

    def write_page(self) -> None:
        explorer.write_page(self.out_dir, self.page_data())

    def page_data(self) -> dict[str, Any]:
        spec = self.spec
        meta = spec.meta
        cells = {
            key: {"image": e["file"], "thumb": e["thumb"], "seed": e.get("seed"), "params": e.get("params", {}),
                  "time": e.get("time"), "hash": e.get("hash"), "parameters": e.get("parameters", ""),
                  **({"files": e["files"]} if e.get("files") else {}), **({"size": e["size"]} if e.get("size") else {}),
                  **({"metrics": self.influence.metrics[key]} if key in self.influence.metrics else {}),
                  **({"scores": scores} if (scores := numeric_fields(e.get("metadata"), e.get("params"))) else {})}
            for key, e in self.entries.items()
        }
        return {
            "version": 1, "title": meta.title, "author": meta.author, "description": meta.description,
            "stylesheet": meta.stylesheet, "format": meta.format, "page": dict(meta.page),
            "random_seed": self.random_seed,
            "axes": [{"id": axis.id, "title": axis.title, "description": axis.description, "default": axis.default,
                      "values": [{"id": v.id, "title": v.title, "description": v.description, "skip": v.skip,
                                  "show": v.show, "params": v.params} for v in axis.values]}
                     for axis in spec.axes],
            "base_params": spec.base_params, "cells": cells, "progress": dict(self.progress),
            "influence": self.influence.summary(),
        }

    def load_image(self, key: str) -> Image.Image:
        return Image.open(self.out_dir / self.entries[key]["file"])
