"""Keeps recently used models loaded, so a grid that alternates along a `model` or `vae` axis does
not read and convert the same files again.

Entries are keyed by the files' paths and modification times (a file replaced on disk loads afresh)
and by device and dtype. The model in use sits on the device; the others are parked in CPU memory
and the least recently used go once all of them together exceed the byte budget.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridgen.backends.sd.models.load import Components

_GIB = 1 << 30


def default_budget() -> int:
    """A quarter of the machine's memory, at most 16 GiB: room for a few SD 1.x models or one or two SDXL."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 16 * _GIB
    return min(physical // 4, 16 * _GIB)


def modified(path: Path | None) -> int:
    """The newest modification time of a file, or of any file in a folder (weights are replaced inside it)."""
    if path is None:
        return 0
    if path.is_file():
        return path.stat().st_mtime_ns
    return max((item.stat().st_mtime_ns for item in path.rglob("*") if item.is_file()), default=0)


def size_bytes(parts: Components) -> int:
    return sum(t.numel() * t.element_size() for module in parts.modules()
               for t in (*module.parameters(), *module.buffers()))


class ModelCache:
    """Loaded models by key, least recently used first; `loads` counts the loads from disk."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = default_budget() if budget_bytes is None else budget_bytes
        self.loads = 0
        self.hits = 0
        self._entries: OrderedDict[Hashable, tuple[Components, Any]] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], tuple[Components, Any]]) -> tuple[Components, Any]:
        """The entry for `key` on its device, loading it with `load` when absent; parks and evicts the rest."""
        # The others leave the device first, so it never holds two models at once.
        self._park(other for other in self._entries if other != key)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            parts, extra = self._entries[key]
            for module in parts.modules():
                module.to(parts.device)
        else:
            self._trim(keep=0)  # make room before the new weights arrive
            parts, extra = self._entries[key] = load()
            self.loads += 1
        self._trim(keep=1)
        return parts, extra

    def _park(self, keys) -> None:
        for key in list(keys):
            parts, _ = self._entries[key]
            if parts.device.type != "cpu":
                for module in parts.modules():
                    module.to("cpu")

    def _trim(self, keep: int) -> None:
        """Drop the least recently used entries until all fit the budget, keeping the newest `keep`."""
        import torch

        while len(self._entries) > keep and sum(size_bytes(p) for p, _ in self._entries.values()) > self.budget:
            self._entries.popitem(last=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
