"""Throughput of the ray executor: 1 against 2 CPU workers on the tiny grid, and, where CUDA is
present, one GPU worker against the local executor.

    python bench/ray_throughput.py                       # 64 cells, 64 px, 10 steps
    python bench/ray_throughput.py --cells 128 --steps 20

Each run renders the same grid into a fresh folder. Two rates are printed per run: end to end
(worker start and model load included) and steady (from the moment every worker has landed its
first batch to the last image). Ray is started once, before any timing. Figures depend on the
machine and on whatever else runs on it: run it, don't quote it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from gridgen.executors.local import run_local
from gridgen.executors.ray_executor import run_ray
from gridgen.runner import RunOptions, prepare
from gridgen.store import Store
from gridgen.tiny import TINY_MODEL_DIR

PROMPTS = ["a red circle on a white background", "a blue square on a black background",
           "a green triangle on a gray background", "a yellow circle on a black background"]


class TimedStore(Store):
    """Records when each image is written."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []
        self._stamp_lock = threading.Lock()

    def write(self, result):
        super().write(result)
        with self._stamp_lock:
            self.stamps.append(time.perf_counter())


@dataclass
class Rate:
    images: int
    wall_s: float
    steady: float  # images/s once every worker has landed a batch

    def line(self, label: str) -> str:
        return (f"{label:<32} {self.images} images in {self.wall_s:5.1f} s = {self.images / self.wall_s:5.2f} img/s "
                f"end to end, {self.steady:5.2f} img/s steady")


def write_spec(folder: Path, model: Path, cells: int, size: int, steps: int) -> Path:
    seeds = max(1, cells // len(PROMPTS))
    spec = {"grid": {"title": "ray throughput", "format": "png",
                     "params": {"model": str(model), "steps": steps, "sampler": "Euler", "width": size,
                                "height": size}},
            "axes": {"prompt": " || ".join(PROMPTS), "seed": ", ".join(str(s) for s in range(1, seeds + 1))}}
    path = folder / "ray_throughput.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed(spec: Path, out: Path, options: RunOptions, warm_images: int, runner) -> Rate:
    prepared = prepare(spec, options)
    store = TimedStore(out, prepared.plan.spec, prepared.plan.random_seed, overwrite=True)
    started = time.perf_counter()
    try:
        summary = runner(prepared, store)
    finally:
        prepared.plan.backend.close()
    wall = time.perf_counter() - started
    stamps = sorted(store.stamps)
    if summary.failed or summary.rendered != len(stamps):
        raise SystemExit(f"the run failed: {summary.errors}")
    k = min(max(1, warm_images), len(stamps) - 1)
    steady = (len(stamps) - k) / (stamps[-1] - stamps[k - 1]) if stamps[-1] > stamps[k - 1] else 0.0
    return Rate(len(stamps), wall, steady)


def ray_rate(spec: Path, out: Path, batch: int, workers: int, gpus_per_worker: float, device: str,
             dtype: str = "auto") -> Rate:
    options = RunOptions(out=out, batch_size=batch, device=device, dtype=dtype, executor="ray", workers=workers,
                         gpus_per_worker=gpus_per_worker, overwrite=True)
    return timed(spec, out, options, batch * workers, lambda prepared, store: run_ray(
        prepared.plan, store, prepared.context, workers=workers, gpus_per_worker=gpus_per_worker,
        show_progress=False))


def local_rate(spec: Path, out: Path, batch: int, device: str, dtype: str) -> Rate:
    options = RunOptions(out=out, batch_size=batch, device=device, dtype=dtype, overwrite=True)
    return timed(spec, out, options, batch, lambda prepared, store: run_local(prepared.plan, store, max_batch=batch,
                                                                              show_progress=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gpu-size", type=int, default=512, help="image size of the GPU comparison")
    args = parser.parse_args()
    import ray

    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, load average {os.getloadavg()[0]:.1f} before the runs "
          "(a shared machine skews these figures)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = write_spec(folder, TINY_MODEL_DIR, args.cells, args.size, args.steps)
        print(f"tiny grid: {args.cells} cells, {args.size} px, {args.steps} steps, batch {args.batch_size}, "
              "CPU workers (torch threads in brackets)")
        # A Ray instance of one CPU first, so the single worker gets one thread like each of the two later.
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        one = ray_rate(spec, folder / "one", args.batch_size, 1, 0, "cpu")
        ray.shutdown()
        print(one.line("ray, 1 worker on 1 CPU (x1)"))
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        two = ray_rate(spec, folder / "two", args.batch_size, 2, 0, "cpu")
        print(two.line(f"ray, 2 workers on {cpus} CPUs (x{max(1, cpus // 2)})"))
        print(f"ratio 2 / 1 workers: {two.images / two.wall_s / (one.images / one.wall_s):.2f}x end to end, "
              f"{two.steady / one.steady:.2f}x steady")
        wide = ray_rate(spec, folder / "wide", args.batch_size, 1, 0, "cpu")
        print(wide.line(f"ray, 1 worker on {cpus} CPUs (x{cpus})"))
        if torch.cuda.is_available() and ray.cluster_resources().get("GPU", 0) >= 1:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from grid_throughput import sd15_random

            model = sd15_random(folder / "sd15")
            (folder / "gpu").mkdir()
            gpu_spec = write_spec(folder / "gpu", model, 64, args.gpu_size, 20)
            print(f"GPU: {torch.cuda.get_device_name()}, SD 1.5-sized random weights, 64 cells, {args.gpu_size} px, "
                  "20 steps, fp16, batch 16")
            local = local_rate(gpu_spec, folder / "gpu-local", 16, "cuda", "fp16")
            print(local.line("local executor"))
            remote = ray_rate(gpu_spec, folder / "gpu-ray", 16, 1, 1, "auto", "fp16")
            print(remote.line("ray, 1 GPU worker"))
            print(f"ratio ray / local: {remote.steady / local.steady:.2f}x steady "
                  f"({'within' if abs(remote.steady / local.steady - 1) <= 0.10 else 'outside'} 10%), "
                  f"{remote.images / remote.wall_s / (local.images / local.wall_s):.2f}x end to end")
        else:
            print("no CUDA GPU here: the single-GPU ray against local comparison was not run")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
