"""The ray executor: one grid rendered by every GPU of a Ray cluster (or by the CPUs of this machine).

The driver (this process) plans and cuts the plan into batches by batch key, exactly as the local
executor does, and hands whole batches to `RenderWorker` actors: one per GPU (`gpus_per_worker`),
or CPU workers when the cluster has no GPU. Each worker builds its backend once with `load_backend`,
so models stay loaded between batches. A batch goes to an idle worker that already has its model
(load key) loaded when there is one (model affinity); otherwise to a worker whose model no other
worker holds, else to any idle worker. Workers send back pixels, metadata and timings; the driver
builds the `Result`s and is the only writer of the output folder, through `Store.write` as the
local executor, so the files are byte-identical and the store's guarantees (atomic files, journal,
resume) hold unchanged.

Faults: a worker that dies (killed process, lost node, out of memory) or raises an unexpected
error (a CUDA error leaves its device unusable) is replaced and its batch re-queued to another
worker; a batch that fails 3 times is journaled as failed, with the error, and the rest of the grid
goes on (a rerun tries it again). Ctrl-C or `stop` lets the batches in flight land, then stops.

With no cluster running, a local Ray instance sized to this machine is started for the run.
Every node of a remote cluster needs gridgen installed and the grid's models at the same paths.

This module is the driver; `ray_worker` holds the actor and `ray_pool` the workers and their scheduling.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from PIL import Image
from tqdm import tqdm

from gridgen.backends.base import BackendContext, Result
from gridgen.errors import GridError
from gridgen.executors.common import BatchLimit, RunSummary, StopFlag, batches, count_work, record_failure, settle
from gridgen.executors.ray_pool import Job, WorkerPool, WorkerState, pick_job
from gridgen.plan import Plan
from gridgen.store import Store

MAX_ATTEMPTS = 3  # a batch failing this many times is journaled as failed
_POLL_S = 0.2  # how often the driver looks at Ctrl-C and `stop` while it waits
_PLACEMENT_WARNING_S = 120.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise GridError("--executor ray needs Ray: pip install 'gridgen[ray]'") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), else start a local one; True if started here."""
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        try:
            ray.init(address=address, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = address or os.environ.get("RAY_ADDRESS")
            raise GridError(f"cannot connect to the Ray cluster at {where}: {str(err).rstrip('.')}; start one with "
                            "`ray start --head`, or leave out --ray-address to use this machine alone") from None
        return True
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    return True


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class _Driver:
    """One ray run's state on the driver: the queue of batches, what is in flight, the writes."""

    def __init__(self, ray, plan: Plan, store: Store, max_batch: int, pool: WorkerPool, summary: RunSummary, bar,
                 writer):
        self.ray, self.plan, self.store, self.pool = ray, plan, store, pool
        self.summary, self.bar, self.writer = summary, bar, writer
        self.max_batch = max(1, int(max_batch))
        self.limit = BatchLimit(self.max_batch)
        self.source = batches(plan.cells(), plan, store, summary, self.limit, fit=False)
        self.exhausted = False
        self.queue: deque[Job] = deque()
        self.in_flight: dict[Any, tuple[WorkerState, Job]] = {}
        self.pending: list[Future] = []
        self.requeued = 0
        self.stopping = False
        self.created = time.monotonic()
        self.warned = False

    def fill(self) -> None:
        lookahead = 2 * len(self.pool.alive()) + 2
        while not self.exhausted and len(self.queue) < lookahead:
            try:
                cells = next(self.source)
            except StopIteration:
                self.exhausted = True
                return
            params = cells[0].params
            self.queue.append(Job(cells, self.plan.backend.load_key(params), self.plan.backend.batch_key(params)))

    def dispatch(self) -> None:
        ready = {w.index for w in self.pool.alive() if w.ready}
        for same_model_only in (True, False):  # workers that have a batch's model loaded choose first
            for worker in self.pool.idle():
                others = {w.loaded for w in self.pool.alive() if w is not worker}
                job = pick_job(worker.index, worker.loaded, self.queue, others, ready, same_model_only)
                if job is None:
                    continue
                self.queue.remove(job)
                worker.job, worker.loaded = job, job.load_key
                cells = [replace(cell, param_locations={}) for cell in job.cells]  # what the worker needs
                self.in_flight[worker.handle.render.remote(cells)] = (worker, job)

    def work_left(self) -> bool:
        if self.queue:
            return True
        if not self.exhausted:
            self.fill()
        return bool(self.queue)

    def run(self, interrupt: StopFlag, stop: threading.Event | None) -> None:
        while True:
            if not self.stopping and (interrupt.requested or (stop is not None and stop.is_set())):
                self.stopping = True
            if not self.stopping:
                self.fill()
                self.dispatch()
            if not self.in_flight:
                if self.stopping:
                    self.summary.interrupted = self.work_left()
                    return
                if not self.work_left():
                    return
                if not self.pool.alive():
                    raise GridError(f"every Ray worker failed; the last: {self.pool.last_death}")
            self.wait()
            self.pending = settle(self.pending, self.summary, limit=2 * self.max_batch)

    def wait(self) -> None:
        starting = {} if self.stopping else {w.ready_ref: w for w in self.pool.starting()}
        if starting and not self.warned and time.monotonic() - self.created > _PLACEMENT_WARNING_S \
                and not any(w.ready for w in self.pool.alive()):
            self.warned = True
            print(f"still waiting for Ray to start {len(starting)} worker(s), each needing {self.pool.resources}; "
                  "does the cluster have room for them?", file=sys.stderr)
        waiting = [*self.in_flight, *starting]
        if not waiting:
            time.sleep(_POLL_S)
            return
        ready, rest = self.ray.wait(waiting, num_returns=1, timeout=_POLL_S)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            if ref in starting:
                self.started(starting[ref], ref)
            else:
                self.landed(ref)

    def started(self, worker: WorkerState, ref) -> None:
        try:
            worker.info = self.ray.get(ref)
            worker.ready = True
        except self.ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            self.pool.replace(worker, f"could not start: {_first_line(cause)}")

    def landed(self, ref) -> None:
        worker, job = self.in_flight.pop(ref)
        worker.job = None
        errors = self.ray.exceptions
        try:
            reply = self.ray.get(ref)
        except errors.RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            message = str(cause) if isinstance(cause, GridError) else _first_line(cause)
            if not isinstance(cause, GridError):  # it may have left the device unusable (a CUDA error)
                self.pool.replace(worker, f"raised {message}")
            self.retry(job, worker, message)
            return
        except errors.RayError as err:  # the worker died: killed, out of memory, its node lost
            self.pool.replace(worker, f"died ({_first_line(err)})")
            self.retry(job, worker, f"{worker.describe()} died: {_first_line(err)}")
            return
        self.write(worker, job, reply)

    def retry(self, job: Job, worker: WorkerState, message: str) -> None:
        if self.stopping:
            return  # its cells stay not done; the next run renders them
        job.attempts += 1
        job.avoid.add(worker.index)
        if job.attempts >= MAX_ATTEMPTS:
            record_failure(self.summary, self.store, job.cells, f"{message} (failed {job.attempts} times)")
            self.bar.update(len(job.cells))
            return
        self.requeued += 1
        print(f"{worker.describe()}: {message}; re-queued its batch of {len(job.cells)} cell(s)", file=sys.stderr)
        self.queue.appendleft(job)

    def write(self, worker: WorkerState, job: Job, reply: dict[str, Any]) -> None:
        worker.cells += len(reply["results"])
        worker.batches += 1
        worker.busy_s += reply["render_s"]
        worker.loads = reply["loads"]
        if reply["limit"] < self.limit.size(job.batch_key):
            self.limit.lower(job.batch_key, reply["limit"])
        cells = {cell.key: cell for cell in job.cells}
        for key, pixels, metadata, timings, extra, deep in reply["results"]:
            files = {name: Image.fromarray(array) for name, array in extra.items()}
            result = Result(cells[key], Image.fromarray(pixels), metadata=metadata, timings=timings, files=files,
                            deep=deep)
            self.pending.append(self.writer.submit(self.store.write, result))
            self.summary.rendered += 1
            self.bar.update(1)


def run_ray(plan: Plan, store: Store, context: BackendContext, *, address: str | None = None,
            gpus_per_worker: float = 1,
            workers: int | None = None, show_progress: bool = True,
            stop: threading.Event | None = None) -> RunSummary:
    """Render every cell of `plan` not yet in `store` on Ray workers; `stop` (or Ctrl-C) ends the run
    once the batches in flight have landed. `context` is the one the run's backend was built with: each
    worker builds its own backend (`plan.backend.name`) from it."""
    ray = _import_ray()
    summary = RunSummary()
    started = time.monotonic()
    to_render, skipped = count_work(plan, store)
    store.progress["skipped"] = skipped
    store.write_page()
    store.publish(force=True, running=True)
    started_here = _connect(ray, address)
    pool: WorkerPool | None = None
    bar = tqdm(total=to_render, unit="img", disable=not show_progress, dynamic_ncols=True)
    finished = False
    try:
        pool = WorkerPool(ray, plan.backend.name, context, gpus_per_worker, workers)
        writers = max(2, min(8, len(pool.workers)))
        with StopFlag() as interrupt, ThreadPoolExecutor(max_workers=writers,
                                                         thread_name_prefix="gridgen-write") as writer:
            driver = _Driver(ray, plan, store, context.max_batch, pool, summary, bar, writer)
            try:
                driver.run(interrupt, stop)
            finally:
                settle(driver.pending, summary, limit=0)
        if driver.requeued:
            summary.notes.append(f"{driver.requeued} batch(es) re-queued after a worker failed")
        finished = True
    finally:
        bar.close()
        if pool is not None:
            pool.close(summary, collect=finished)  # an aborted run does not wait for the workers
        if started_here:
            ray.shutdown()
        summary.wall_s = time.monotonic() - started
        store.publish(force=True, running=False)
    return summary
