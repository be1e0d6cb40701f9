"""The stage cache: outputs of pipeline stages, keyed by what they depend on, kept across cells.

A stage (base generation, an upscaler, a SAM mask) is a pure function of some params and an
input. Two cells that differ only in a later stage share the earlier stage's output through this
cache, so a grid over `upscaler x noise_level` renders each base image once. Entries live in
memory up to a byte budget (least recently used go first) and, when a spill folder is set, the
evicted ones are saved there as safetensors files (`spill_format`, never a pickle: the output folder
may be shared) and read back on the next hit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridgen.backends.sd.stages import spill_format
from gridgen.fsutil import atomic_write_bytes


def stage_key(stage: str, params: dict[str, Any], input_key: str = "") -> str:
    """A stable hash of a stage name, the params it depends on, and the key of its input."""
    text = json.dumps([stage, params, input_key], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _size_of(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, tuple | list):
        return sum(_size_of(item) for item in value)
    if hasattr(value, "nbytes"):  # a numpy array (SAM's masks)
        return int(value.nbytes)
    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        width, height = value.size
        return width * height * len(value.getbands())
    return 64


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    spilled: int = 0

    def line(self) -> str:
        return f"stage cache: {self.hits} hits, {self.misses} misses, {self.spilled} spilled to disk"


class StageCache:
    def __init__(self, budget_bytes: int = 1 << 30, spill_dir: Path | None = None):
        self.budget_bytes = budget_bytes
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return self._entries[key][0]
        spilled = self._spill_path(key)
        if spilled is not None and spilled.exists():
            try:
                value = spill_format.decode(spilled)
            except ValueError:  # damaged or foreign: recompute the entry
                spilled.unlink(missing_ok=True)
            else:
                self.stats.hits += 1
                self.put(key, value)
                return value
        self.stats.misses += 1
        return None

    def put(self, key: str, value: Any) -> None:
        if self.budget_bytes <= 0 and self.spill_dir is None:
            return  # a zero budget turns the cache off
        size = _size_of(value)
        evicted: list[tuple[str, Any]] = []
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget_bytes and self._entries:
                old_key, (old_value, old_size) = self._entries.popitem(last=False)
                self._bytes -= old_size
                evicted.append((old_key, old_value))
        for old_key, old_value in evicted:
            self._spill(old_key, old_value)

    def _spill_path(self, key: str) -> Path | None:
        return self.spill_dir / f"{key}.safetensors" if self.spill_dir else None

    def _spill(self, key: str, value: Any) -> None:
        path = self._spill_path(key)
        if path is None or path.exists():
            return
        data = spill_format.encode(value)
        if data is None:
            return  # a value the format cannot hold is dropped, and recomputed if needed again
        atomic_write_bytes(path, data)
        self.stats.spilled += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
