"""The ray executor's pool of render workers: starting them, replacing the dead, which queued batch an idle
worker takes next (model affinity), and their counters at the end of a run.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gridgen.backends.base import BackendContext, Cell
from gridgen.executors.common import RunSummary
from gridgen.executors.ray_worker import NOTHING_LOADED, RenderWorker, size_workers, worker_context


@dataclass(eq=False)
class Job:
    """A batch on its way: the cells, their keys, and how it fared so far."""

    cells: list[Cell]
    load_key: Hashable
    batch_key: Hashable
    attempts: int = 0
    avoid: set[int] = field(default_factory=set)  # workers it failed on


@dataclass(eq=False)
class WorkerState:
    """The driver's record of one render worker: its actor, what it has loaded, its batch, its counters."""

    index: int
    handle: Any
    ready_ref: Any
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    loaded: Hashable = NOTHING_LOADED  # load key of the last batch sent to it
    job: Job | None = None
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


def pick_job(worker: int, loaded: Hashable, queue: Sequence[Job], others_loaded: set, ready: set[int],
             same_model_only: bool = False) -> Job | None:
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


class WorkerPool:
    """The render workers: starts them, replaces the dead, collects their counters, stops them."""

    def __init__(self, ray, backend_name: str, context: BackendContext, gpus_per_worker: float,
                 workers: int | None):
        self.ray = ray
        resources = ray.cluster_resources()
        node_cpus = max((node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")),
                        default=1.0)
        count, self.resources, self.threads = size_workers(
            float(resources.get("GPU", 0)), float(resources.get("CPU", 1)), node_cpus, gpus_per_worker, workers,
            context.device)
        self.context = worker_context(context, "num_gpus" in self.resources)
        self.backend_name = backend_name
        self.tag = uuid.uuid4().hex[:8]
        self.workers: list[WorkerState] = []
        self.restarts_left = 2 * count + 3
        self.last_death = ""
        self._remote = ray.remote(RenderWorker)
        for _ in range(count):
            self._start()

    def _start(self) -> None:
        index = len(self.workers)
        handle = self._remote.options(name=f"gridgen-{self.tag}-worker-{index}", max_restarts=0,
                                      **self.resources).remote(self.backend_name, self.context, self.threads)
        self.workers.append(WorkerState(index, handle, handle.ready.remote()))

    def alive(self) -> list[WorkerState]:
        return [w for w in self.workers if w.died is None]

    def idle(self) -> list[WorkerState]:
        return [w for w in self.workers if w.died is None and w.ready and w.job is None]

    def starting(self) -> list[WorkerState]:
        return [w for w in self.workers if w.died is None and not w.ready]

    def replace(self, worker: WorkerState, reason: str) -> None:
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


