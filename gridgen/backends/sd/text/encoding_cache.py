"""The cache the text encoders share: results per request key, least recently used dropped first.

CLIP prompts, SDXL's two encoders and ELLA's T5 features are all "encode each distinct request
once, serve repeats from memory": a grid repeats the same few prompts in every cell.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class EncodingCache(Generic[Key, Value]):
    """Up to `capacity` results by key; `hits` and `misses` count requests served and computed."""

    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def lookup(self, keys: Sequence[Key], compute: Callable[[list[Key]], list[Value]]) -> list[Value]:
        """The result for each key, in order; `compute` gets the distinct missing keys in one call."""
        missing = [key for key in dict.fromkeys(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            self._entries.update(zip(missing, compute(missing), strict=True))
        rows = []
        for key in keys:
            self._entries.move_to_end(key)
            rows.append(self._entries[key])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return rows

    def clear(self) -> None:
        self._entries.clear()
