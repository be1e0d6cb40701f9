"""The local executor: one process, one device.

The backend runs on the calling thread; encoding and writing each finished image happens on a
small thread pool so the device never waits on disk. Consecutive cells with the same batch key
form a batch. Ctrl-C (SIGINT) lets the batch in flight finish and be written, then stops; the
next run resumes from the journal.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from gridgen.errors import GridError
from gridgen.plan import Cell, Plan
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

    @property
    def images_per_s(self) -> float:
        return self.rendered / self.wall_s if self.wall_s > 0 else 0.0

    def lines(self) -> list[str]:
        return [
            f"rendered {self.rendered}, skipped {self.skipped}, already done {self.resumed}, failed {self.failed}",
            f"wall time {self.wall_s:.1f} s, {self.images_per_s:.2f} images/s",
        ]


def batches(cells: Iterator[Cell], plan: Plan, store: Store, summary: RunSummary,
            max_batch: int) -> Iterator[list[Cell]]:
    """Group consecutive cells to render that share a batch key, at most `max_batch` at a time."""
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
        if batch and (key != batch_key or len(batch) >= max_batch):
            yield batch
            batch = []
        batch_key = key
        batch.append(cell)
    if batch:
        yield batch


class _StopFlag:
    """Turns the first SIGINT into a request to stop after the batch in flight; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if _main_thread():
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


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_local(plan: Plan, store: Store, max_batch: int = 8, show_progress: bool = True,
              writers: int = 2, stop: threading.Event | None = None) -> RunSummary:
    """Render every cell of `plan` not yet in `store`; `stop` ends the run after the batch in flight."""
    summary = RunSummary()
    started = time.monotonic()
    to_render = skipped = 0
    for cell in plan.cells():
        skipped += cell.skip
        to_render += not cell.skip and not store.is_done(cell.key)
    store.progress["skipped"] = skipped
    store.write_page()
    store.publish(force=True, running=True)
    pending: list[Future] = []
    bar = tqdm(total=to_render, unit="img", disable=not show_progress, dynamic_ncols=True)
    with _StopFlag() as interrupt, ThreadPoolExecutor(max_workers=writers, thread_name_prefix="gridgen-write") as pool:
        for batch in batches(plan.cells(), plan, store, summary, max_batch):
            try:
                for result in plan.backend.render(batch):
                    pending.append(pool.submit(store.write, result))
                    summary.rendered += 1
                    bar.update(1)
            except GridError as err:
                _record_failure(summary, store, batch, str(err))
            pending = _settle(pending, summary, limit=2 * max_batch)
            if interrupt.requested or (stop is not None and stop.is_set()):
                summary.interrupted = True
                break
        _settle(pending, summary, limit=0)
    bar.close()
    summary.wall_s = time.monotonic() - started
    store.publish(force=True, running=False)
    return summary


def _record_failure(summary: RunSummary, store: Store, batch: list[Cell], message: str) -> None:
    summary.failed += len(batch)
    store.progress["failed"] += len(batch)
    if message not in summary.errors:
        summary.errors.append(message)
        print(f"error: {message}", file=sys.stderr)


def _settle(pending: list[Future], summary: RunSummary, limit: int) -> list[Future]:
    """Wait for writes until at most `limit` are in flight; a failed write counts as a failed cell."""
    while len(pending) > limit:
        future = pending.pop(0)
        try:
            future.result()
        except OSError as err:
            summary.rendered -= 1
            summary.failed += 1
            message = f"cannot write an image: {err}"
            if message not in summary.errors:
                summary.errors.append(message)
                print(f"error: {message}", file=sys.stderr)
    return pending
