"""The Ray side of the ray executor: the `RenderWorker` actor (one backend on one device, rendering whole
batches) and how many workers a cluster holds, with what resources.

A worker builds its backend with `load_backend(name, context)` from the run's `BackendContext`, the
device rewritten as the worker sees it and no output folder (only the driver writes there). It sends
back pixels as arrays, and the backend's metadata and timings as they are, so those must pickle.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from PIL import Image

from gridgen.backends import load_backend
from gridgen.backends.base import BackendContext, Cell, Result
from gridgen.errors import GridError
from gridgen.executors.common import BatchLimit, render_halving

NOTHING_LOADED = ("<no model loaded>",)


class RenderWorker:
    """A Ray actor: one backend on one device, rendering whole batches; models stay loaded."""

    def __init__(self, backend_name: str, context: BackendContext, threads: int):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.backend = load_backend(backend_name, context)
        self.limit = BatchLimit(context.max_batch)
        self.loaded: Hashable = NOTHING_LOADED
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
        return {"results": [(r.cell.key, _pixels(r.image), r.metadata, r.timings, _extra_pixels(r.files), r.deep)
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


def worker_context(context: BackendContext, gpu: bool) -> BackendContext:
    """The run's context as a worker sees it: Ray shows a worker only its own GPUs, from index 0, and stage
    caches stay in memory (only the driver writes the output folder)."""
    device = ("cuda" if context.device.startswith("cuda") else context.device) if gpu else "cpu"
    return replace(context, device=device, out_dir=None)
