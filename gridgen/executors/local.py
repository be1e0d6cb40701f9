"""The local executor: one process, one device.

The backend runs on the calling thread; encoding and writing each finished image happens on a
small thread pool so the device never waits on disk. Consecutive cells with the same batch key
form a batch. Ctrl-C (SIGINT) lets the batch in flight finish and be written, then stops; the
next run resumes from the journal.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from tqdm import tqdm

from gridgen.errors import GridError
from gridgen.executors.common import (
    BatchLimit,
    RunSummary,
    StopFlag,
    batches,
    count_work,
    record_failure,
    render_halving,
    settle,
)
from gridgen.plan import Plan
from gridgen.store import Store

__all__ = ["BatchLimit", "RunSummary", "batches", "render_halving", "run_local"]


def run_local(plan: Plan, store: Store, max_batch: int = 8, show_progress: bool = True,
              writers: int = 2, stop: threading.Event | None = None) -> RunSummary:
    """Render every cell of `plan` not yet in `store`; `stop` ends the run after the batch in flight."""
    summary = RunSummary()
    started = time.monotonic()
    to_render, skipped = count_work(plan, store)
    store.progress["skipped"] = skipped
    store.write_page()
    store.publish(force=True, running=True)
    pending: list[Future] = []
    bar = tqdm(total=to_render, unit="img", disable=not show_progress, dynamic_ncols=True)
    with StopFlag() as interrupt, ThreadPoolExecutor(max_workers=writers, thread_name_prefix="gridgen-write") as pool:
        limit = BatchLimit(max_batch)
        for batch in batches(plan.cells(), plan, store, summary, limit):
            landed: set[str] = set()
            try:
                for result in render_halving(plan.backend, batch, limit, plan.backend.batch_key(batch[0].params)):
                    pending.append(pool.submit(store.write, result))
                    landed.add(result.cell.key)
                    summary.rendered += 1
                    bar.update(1)
            except GridError as err:
                record_failure(summary, store, [cell for cell in batch if cell.key not in landed], str(err))
            pending = settle(pending, summary, limit=2 * max_batch)
            if interrupt.requested or (stop is not None and stop.is_set()):
                summary.interrupted = True
                break
        settle(pending, summary, limit=0)
    bar.close()
    summary.wall_s = time.monotonic() - started
    summary.notes = plan.backend.stats()
    store.publish(force=True, running=False)
    return summary
