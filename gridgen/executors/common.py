"""What every executor shares: the run summary, batching by batch key, the batch-size limit and its
halving on out-of-memory, the Ctrl-C flag, and recording failed cells and failed writes.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from gridgen.backends.base import BatchOutOfMemory, Cell, Result
from gridgen.errors import GridError
from gridgen.plan import Plan
from gridgen.store import Store


@dataclass
class RunSummary:
    rendered: int = 0
    skipped: int = 0  # cells of `skip: true` values
    resumed: int = 0  # cells already on disk from an earlier run
    failed: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the backend's own counters (caches, ...)
    workers: list[dict[str, Any]] = field(default_factory=list)  # per-worker counters (the ray executor)

    @property
    def images_per_s(self) -> float:
        return self.rendered / self.wall_s if self.wall_s > 0 else 0.0

    def lines(self) -> list[str]:
        return [
            f"rendered {self.rendered}, skipped {self.skipped}, already done {self.resumed}, failed {self.failed}",
            f"wall time {self.wall_s:.1f} s, {self.images_per_s:.2f} images/s",
            *self.notes,
        ]


class BatchLimit:
    """The most cells of one batch key sent to the backend at once.

    It starts at the user's batch size, may be lowered by the backend's measurement of what fits,
    and is halved for the rest of the run when the device runs out of memory anyway.
    """

    def __init__(self, size: int):
        self.default = max(1, size)
        self._by_key: dict = {}

    def size(self, key) -> int:
        return self._by_key.get(key, self.default)

    def lower(self, key, size: int) -> None:
        self._by_key[key] = max(1, min(self.size(key), size))

    def known(self, key) -> bool:
        return key in self._by_key


def count_work(plan: Plan, store: Store) -> tuple[int, int]:
    """(cells to render, cells skipped) of a plan against what the store already holds."""
    to_render = skipped = 0
    for cell in plan.cells():
        skipped += cell.skip
        to_render += not cell.skip and not store.is_done(cell.key)
    return to_render, skipped


def batches(cells: Iterator[Cell], plan: Plan, store: Store, summary: RunSummary,
            limit: BatchLimit, fit: bool = True) -> Iterator[list[Cell]]:
    """Group consecutive cells to render that share a batch key, at most `limit.size` at a time.

    With `fit`, the first time a batch key comes up the backend may measure how many of its cells fit
    the device (an executor whose devices live elsewhere leaves that to its workers).
    """
    batch: list[Cell] = []
    batch_key = None
    for cell in cells:
        if cell.skip:
            summary.skipped += 1
            continue
        if store.is_done(cell.key):
            summary.resumed += 1
            continue
        key = plan.backend.batch_key(cell.params)
        if fit and not limit.known(key):
            limit.lower(key, plan.backend.fit_batch(cell.params, limit.size(key)))
        if batch and (key != batch_key or len(batch) >= limit.size(batch_key)):
            yield batch
            batch = []
        batch_key = key
        batch.append(cell)
    if batch:
        yield batch


def render_halving(backend, batch: list[Cell], limit: BatchLimit, key) -> Iterator[Result]:
    """Render a batch; when the device runs out of memory, retry it in halves and keep the smaller size."""
    try:
        results = list(backend.render(batch))  # whole batch or nothing, so a retry never duplicates a cell
    except BatchOutOfMemory:
        if len(batch) == 1:
            raise GridError(f"out of device memory on a single cell ({batch[0].key}); lower width/height, "
                            "use --dtype fp16 or a smaller model") from None
        half = len(batch) // 2
        limit.lower(key, half)
        print(f"out of device memory on a batch of {len(batch)}; retrying in batches of {half}", file=sys.stderr)
        yield from render_halving(backend, batch[:half], limit, key)
        yield from render_halving(backend, batch[half:], limit, key)
        return
    yield from results


class StopFlag:
    """Turns the first SIGINT into a request to stop after the batch in flight; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the batch in flight (Ctrl-C again to abort)...", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def record_failure(summary: RunSummary, store: Store, batch: list[Cell], message: str) -> None:
    """Count a batch as failed and journal each of its cells as failed (a rerun tries them again)."""
    summary.failed += len(batch)
    store.progress["failed"] += len(batch)
    for cell in batch:
        store.write_failure(cell, message)
    if message not in summary.errors:
        summary.errors.append(message)
        print(f"error: {message}", file=sys.stderr)


def settle(pending: list[Future], summary: RunSummary, limit: int) -> list[Future]:
    """Wait for writes until at most `limit` are in flight; a failed write (or a failed decode of the image it
    waited for) counts as a failed cell, which a rerun renders again."""
    while len(pending) > limit:
        future = pending.pop(0)
        try:
            future.result()
        except (OSError, GridError) as err:
            summary.rendered -= 1
            summary.failed += 1
            message = f"cannot write an image: {err}" if isinstance(err, OSError) else str(err)
            if message not in summary.errors:
                summary.errors.append(message)
                print(f"error: {message}", file=sys.stderr)
    return pending
