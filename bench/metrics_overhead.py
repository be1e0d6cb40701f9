"""What the page's image metrics and axis influence cost a run: grids/demo.yaml on the CPU, with and without.

Renders the demo grid from scratch several times in one process, alternating runs with the metrics on
and runs with `Influence.add` and `Influence.catch_up` replaced by no-ops (after one warm-up run that
loads the model), and prints the median wall times, their ratio, and the time spent inside the metrics
code as a share of the runs that computed them. Not a test: nothing asserts. The issue's target is an
overhead under 10%.

    .venv/bin/python bench/metrics_overhead.py [--runs 3] [--spec grids/demo.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gridgen.metrics import Influence
from gridgen.runner import RunOptions, execute, prepare

TARGET = 0.10


def render(spec: Path, out: Path) -> float:
    options = RunOptions(out=out, overwrite=True, device="cpu")
    prepared = prepare(spec, options)
    start = time.perf_counter()
    summary = execute(prepared, options, show_progress=False)
    if summary.failed:
        raise SystemExit(f"{summary.failed} cell(s) failed")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    parser.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "grids" / "demo.yaml"))
    args = parser.parse_args(argv)
    spec = Path(args.spec)
    add, catch_up = Influence.add, Influence.catch_up
    inside = [0.0]

    def timed_add(self, key, image):
        start = time.perf_counter()
        add(self, key, image)
        inside[0] += time.perf_counter() - start

    def timed_catch_up(self, folder, thumbs):
        start = time.perf_counter()
        catch_up(self, folder, thumbs)
        inside[0] += time.perf_counter() - start

    on, off, shares = [], [], []
    with tempfile.TemporaryDirectory(prefix="gridgen-metrics-") as tmp:
        render(spec, Path(tmp) / "warm-up")
        for n in range(args.runs):
            Influence.add, Influence.catch_up = timed_add, timed_catch_up
            inside[0] = 0.0
            on.append(render(spec, Path(tmp) / f"on-{n}"))
            shares.append(inside[0] / on[-1])
            Influence.add = lambda self, key, image: None
            Influence.catch_up = lambda self, folder, thumbs: None
            off.append(render(spec, Path(tmp) / f"off-{n}"))
        Influence.add, Influence.catch_up = add, catch_up
    with_metrics, without = statistics.median(on), statistics.median(off)
    print(f"metrics overhead on {spec.name} (CPU, {args.runs} runs each, alternating, after a warm-up run)")
    print(f"  with metrics     median {with_metrics:6.2f} s  ({', '.join(f'{t:.2f}' for t in on)})")
    print(f"  without metrics  median {without:6.2f} s  ({', '.join(f'{t:.2f}' for t in off)})")
    paired = statistics.median(a / b for a, b in zip(on, off, strict=True))
    print(f"  wall-time ratio  {with_metrics / without:.3f} of the medians, {paired:.3f} median of the "
          f"back-to-back pairs  (target below {1 + TARGET:.2f})")
    print(f"  time inside the metrics code: median {statistics.median(shares) * 100:.2f}% of a run "
          f"(target below {TARGET * 100:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
