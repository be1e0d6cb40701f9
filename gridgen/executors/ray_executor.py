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
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image
from tqdm import tqdm

from gridgen.backends import load_backend
from gridgen.backends.base import BackendContext, Cell, Result
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

MAX_ATTEMPTS = 3  # a batch failing this many times is journaled as failed
_NOTHING = ("<no model loaded>",)
_POLL_S = 0.2  # how often the driver looks at Ctrl-C and `stop` while it waits
_PLACEMENT_WARNING_S = 120.0


class RenderWorker:
    """A Ray actor: one backend on one device, rendering whole batches; models stay loaded."""

    def __init__(self, backend_name: str, context: BackendContext, threads: int):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.backend = load_backend(backend_name, context)
        self.limit = BatchLimit(context.max_batch)
        self.loaded: Hashable = _NOTHING
        self.loads: dict[str, int] = {}  # load key -> times this worker switched to it
        self.batches = self.cells = 0
        self.busy_s = 0.0

    def ready(self) -> dict[str, Any]:
        import ray
        import torch

        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        return {"host": socket.gethostname(), "pid": os.getpid(), "gpus": [str(g) for g in gpus],
                "threads": torch.get_num_threads()}

    def render(self, cells: list[Cell]) -> dict[str, Any]:
        """Render a batch of cells sharing a batch key: all of them, or raise."""
        started = time.perf_counter()
        first = cells[0].params
        load = self.backend.load_key(first)
        if load != self.loaded:
            self.loads[repr(load)] = self.loads.get(repr(load), 0) + 1
            self.loaded = load
        key = self.backend.batch_key(first)
        if not self.limit.known(key):
            self.limit.lower(key, self.backend.fit_batch(first, self.limit.size(key)))
        results: list[Result] = []
        rest = list(cells)
        while rest:
            chunk, rest = rest[:self.limit.size(key)], rest[self.limit.size(key):]
            results.extend(render_halving(self.backend, chunk, self.limit, key))
        elapsed = time.perf_counter() - started
        self.batches += 1
        self.cells += len(results)
        self.busy_s += elapsed
        return {"results": [(r.cell.key, _pixels(r.image), r.metadata, r.timings, _extra_pixels(r.files))
                            for r in results],
                "limit": self.limit.size(key), "render_s": elapsed, "loads": dict(self.loads)}

    def stats(self) -> dict[str, Any]:
        return {"loads": dict(self.loads), "batches": self.batches, "cells": self.cells, "busy_s": self.busy_s,
                "backend": list(self.backend.stats())}


def _pixels(image: Image.Image):
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.uint8)  # Store.write saves the RGB pixels


def _extra_pixels(files: dict[str, Image.Image]) -> dict[str, Any]:
    """A result's extra images (a SAM edit's mask and overlay) as arrays, each keeping its mode (L or RGB)."""
    import numpy as np

    return {name: np.asarray(image.convert("L" if image.mode == "L" else "RGB")) for name, image in files.items()}


def size_workers(gpus: float, cpus: float, node_cpus: float, gpus_per_worker: float, workers: int | None,
                 device: str) -> tuple[int, dict[str, float], int]:
    """(how many workers, the Ray resources of each, torch threads of each) for a cluster.

    One worker per `gpus_per_worker` GPUs when the cluster has GPUs; otherwise CPU workers, one per
    two CPUs. `workers` overrides the count; CPU workers split the CPUs between them.
    """
    if workers is not None and workers < 1:
        raise GridError(f"--workers must be at least 1, got {workers}")
    if gpus > 0 and gpus_per_worker > 0 and device != "cpu":
        if gpus_per_worker > gpus:
            raise GridError(f"--gpus-per-worker {gpus_per_worker:g} but the Ray cluster has {gpus:g} GPU(s)")
        count = workers or max(1, int(gpus // gpus_per_worker))
        share = cpus / count
        return count, {"num_gpus": gpus_per_worker, "num_cpus": min(1.0, share)}, max(1, int(share))
    if device.startswith("cuda"):
        raise GridError(f"--device {device} asked for, but the Ray cluster has no GPU; drop --device or use "
                        "--executor local")
    count = workers or max(1, int(cpus // 2))
    share = min(cpus / count, max(node_cpus, 1.0))
    return count, {"num_cpus": float(int(share)) if share >= 1 else share}, max(1, int(share))


def _worker_context(plan: Plan, options, gpu: bool) -> BackendContext:
    """The backend context of a worker: the run's, with the device seen from inside the worker."""
    context = getattr(plan.backend, "context", None)
    if not isinstance(context, BackendContext):
        from gridgen.runner import _models_dir

        spec = plan.spec
        context = BackendContext(spec_dir=spec.folder.resolve(), device=options.device, dtype=options.dtype,
                                 max_batch=options.batch_size, compile=options.compile,
                                 channels_last=options.channels_last, cpu_shards=options.cpu_shards,
                                 models_dir=_models_dir(options, spec.folder, spec.meta.models_dir))
    # Ray shows a worker only its own GPUs, from index 0. Stage caches stay in memory: only the
    # driver writes the output folder.
    device = ("cuda" if context.device.startswith("cuda") else context.device) if gpu else "cpu"
    return replace(context, device=device, out_dir=None)


@dataclass(eq=False)
class _Job:
    """A batch on its way: the cells, their keys, and how it fared so far."""

    cells: list[Cell]
    load_key: Hashable
    batch_key: Hashable
    attempts: int = 0
    avoid: set[int] = field(default_factory=set)  # workers it failed on


@dataclass(eq=False)
class _Worker:
    index: int
    handle: Any
    ready_ref: Any
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    loaded: Hashable = _NOTHING  # load key of the last batch sent to it
    job: _Job | None = None
    cells: int = 0
    batches: int = 0
    busy_s: float = 0.0
    loads: dict[str, int] = field(default_factory=dict)
    backend_stats: list[str] = field(default_factory=list)
    died: str | None = None

    def describe(self) -> str:
        gpus = self.info.get("gpus")
        where = f"GPU {','.join(gpus)}" if gpus else f"CPU x{self.info.get('threads', '?')}"
        return f"worker {self.index} ({where} on {self.info.get('host', '?')})"


def pick_job(worker: int, loaded: Hashable, queue: Sequence[_Job], others_loaded: set, ready: set[int],
             same_model_only: bool = False) -> _Job | None:
    """The batch an idle worker takes next: the first of the model it has loaded; else (unless
    `same_model_only`) the first of a model no other worker has loaded; else the first.

    A batch that failed on a worker goes elsewhere while a ready worker it has not failed on lives.
    """
    eligible = [job for job in queue if worker not in job.avoid or ready <= job.avoid]
    rules = [lambda job: job.load_key == loaded]
    if not same_model_only:
        rules += [lambda job: job.load_key not in others_loaded, lambda job: True]
    for rule in rules:
        for job in eligible:
            if rule(job):
                return job
    return None


class _Pool:
    """The render workers: starts them, replaces the dead, collects their counters, stops them."""

    def __init__(self, ray, plan: Plan, options, gpus_per_worker: float, workers: int | None):
        self.ray = ray
        resources = ray.cluster_resources()
        node_cpus = max((node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")),
                        default=1.0)
        count, self.resources, self.threads = size_workers(
            float(resources.get("GPU", 0)), float(resources.get("CPU", 1)), node_cpus, gpus_per_worker, workers,
            options.device)
        self.context = _worker_context(plan, options, "num_gpus" in self.resources)
        self.backend_name = plan.backend.name
        self.tag = uuid.uuid4().hex[:8]
        self.workers: list[_Worker] = []
        self.restarts_left = 2 * count + 3
        self.last_death = ""
        self._remote = ray.remote(RenderWorker)
        for _ in range(count):
            self._start()

    def _start(self) -> None:
        index = len(self.workers)
        handle = self._remote.options(name=f"gridgen-{self.tag}-worker-{index}", max_restarts=0,
                                      **self.resources).remote(self.backend_name, self.context, self.threads)
        self.workers.append(_Worker(index, handle, handle.ready.remote()))

    def alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.died is None]

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.died is None and w.ready and w.job is None]

    def starting(self) -> list[_Worker]:
        return [w for w in self.workers if w.died is None and not w.ready]

    def replace(self, worker: _Worker, reason: str) -> None:
        """Stop `worker` for good and start another in its place (while restarts are left)."""
        worker.died = reason
        worker.job = None
        self.last_death = f"{worker.describe()}: {reason}"
        try:
            self.ray.kill(worker.handle, no_restart=True)
        except Exception:  # already gone
            pass
        if self.restarts_left > 0:
            self.restarts_left -= 1
            self._start()

    def close(self, summary: RunSummary, collect: bool = True) -> None:
        """Collect each live worker's counters into the summary (with `collect`), then stop every worker."""
        live = [w for w in self.workers if w.died is None and w.ready] if collect else []
        refs = {w.handle.stats.remote(): w for w in live}
        if refs:
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=30)
            for ref in done:
                try:
                    stats = self.ray.get(ref)
                except Exception:  # a worker dying at the end loses its counters only
                    continue
                refs[ref].loads = stats["loads"]
                refs[ref].backend_stats = stats["backend"]
        for worker in self.workers:
            try:
                self.ray.kill(worker.handle, no_restart=True)
            except Exception:  # already gone
                pass
        for worker in self.workers:
            if not worker.ready and worker.died is None:
                continue  # never started (the cluster had no room, or the run ended first)
            summary.workers.append({
                "index": worker.index, "name": worker.describe(), "host": worker.info.get("host"),
                "gpus": worker.info.get("gpus", []), "cells": worker.cells, "batches": worker.batches,
                "busy_s": worker.busy_s, "loads": dict(worker.loads), "died": worker.died})
            rate = worker.cells / worker.busy_s if worker.busy_s > 0 else 0.0
            loads = sum(worker.loads.values())
            line = (f"{worker.describe()}: {worker.cells} images in {worker.batches} batches, {rate:.2f} images/s "
                    f"while busy ({worker.busy_s:.1f} s), {loads} model load(s)")
            summary.notes.append(line + (f"; stopped: {worker.died}" if worker.died else ""))
            summary.notes.extend(f"  {stat}" for stat in worker.backend_stats)


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

    def __init__(self, ray, plan: Plan, store: Store, options, pool: _Pool, summary: RunSummary, bar, writer):
        self.ray, self.plan, self.store, self.pool = ray, plan, store, pool
        self.summary, self.bar, self.writer = summary, bar, writer
        self.max_batch = max(1, int(options.batch_size))
        self.limit = BatchLimit(self.max_batch)
        self.source = batches(plan.cells(), plan, store, summary, self.limit, fit=False)
        self.exhausted = False
        self.queue: deque[_Job] = deque()
        self.in_flight: dict[Any, tuple[_Worker, _Job]] = {}
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
            self.queue.append(_Job(cells, self.plan.backend.load_key(params), self.plan.backend.batch_key(params)))

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

    def started(self, worker: _Worker, ref) -> None:
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

    def retry(self, job: _Job, worker: _Worker, message: str) -> None:
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

    def write(self, worker: _Worker, job: _Job, reply: dict[str, Any]) -> None:
        worker.cells += len(reply["results"])
        worker.batches += 1
        worker.busy_s += reply["render_s"]
        worker.loads = reply["loads"]
        if reply["limit"] < self.limit.size(job.batch_key):
            self.limit.lower(job.batch_key, reply["limit"])
        cells = {cell.key: cell for cell in job.cells}
        for key, pixels, metadata, timings, extra in reply["results"]:
            files = {name: Image.fromarray(array) for name, array in extra.items()}
            result = Result(cells[key], Image.fromarray(pixels), metadata=metadata, timings=timings, files=files)
            self.pending.append(self.writer.submit(self.store.write, result))
            self.summary.rendered += 1
            self.bar.update(1)


def run_ray(plan: Plan, store: Store, options, *, address: str | None = None, gpus_per_worker: float = 1,
            workers: int | None = None, show_progress: bool = True,
            stop: threading.Event | None = None) -> RunSummary:
    """Render every cell of `plan` not yet in `store` on Ray workers; `stop` (or Ctrl-C) ends the run
    once the batches in flight have landed. `options` is the run's RunOptions."""
    ray = _import_ray()
    summary = RunSummary()
    started = time.monotonic()
    to_render, skipped = count_work(plan, store)
    store.progress["skipped"] = skipped
    store.write_page()
    store.publish(force=True, running=True)
    started_here = _connect(ray, address)
    pool: _Pool | None = None
    bar = tqdm(total=to_render, unit="img", disable=not show_progress, dynamic_ncols=True)
    finished = False
    try:
        pool = _Pool(ray, plan, options, gpus_per_worker, workers)
        writers = max(2, min(8, len(pool.workers)))
        with StopFlag() as interrupt, ThreadPoolExecutor(max_workers=writers,
                                                         thread_name_prefix="gridgen-write") as writer:
            driver = _Driver(ray, plan, store, options, pool, summary, bar, writer)
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
