"""HDR brackets on gridgen-tiny: what the exposure fusion keeps that single brackets lose, and what it costs.

Renders one cell plain and as 3, 5 and 7 brackets (one batch each, from the cell's seed) and prints, for every
bracket and for the merged image:

- clipped: the fraction of pixels with a channel at 0 or 255;
- shadow std: the standard deviation of luminance over the darkest tenth of the darkest bracket's pixels (how
  much shadow detail is told apart there);
- mean luminance;

then the ratios merged / brightest bracket (clipping) and merged / darkest bracket (shadow detail), and the render
time of the HDR cell against the plain one. Not a test: nothing asserts.

    .venv/bin/python bench/hdr_exposure.py [--seed 3] [--gap 1.25] [--gamma 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend

BASE = {"model": "gridgen-tiny", "prompt": "a red circle on a blue background", "steps": 8, "sampler": "Euler",
        "width": 64, "height": 64}


def luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def clipped(image: np.ndarray) -> float:
    return float(((image <= 0) | (image >= 255)).any(axis=-1).mean())


def measure(name: str, image: np.ndarray, shadows: np.ndarray) -> tuple[float, float]:
    clip, spread = clipped(image), float(luminance(image)[shadows].std())
    print(f"  {name:<10} clipped {clip:6.3f}  shadow std {spread:6.2f}  mean luminance {luminance(image).mean():6.1f}")
    return clip, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.25)
    parser.add_argument("--gamma", type=float, default=1.0)
    args = parser.parse_args()
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu", max_batch=16))
    params = {**BASE, "seed": args.seed}
    list(backend.render([Cell(0, "warm-up", ("w",), {**params, "seed": args.seed + 1})]))  # loads the model
    started = time.perf_counter()
    list(backend.render([Cell(0, "plain", ("plain",), params)]))
    plain_s = time.perf_counter() - started
    for count in (3, 5, 7):
        cell = Cell(0, f"hdr{count}", (str(count),), {**params, "hdr_brackets": count, "hdr_gap": args.gap,
                                                       "hdr_gamma": args.gamma})
        backend.cache.clear()  # every bracket rendered, none served from the stage cache
        started = time.perf_counter()
        (result,) = backend.render([cell])
        seconds = time.perf_counter() - started
        brackets = [np.asarray(result.files[f"bracket_{n}"].convert("RGB"), dtype=np.float32)
                    for n in range(1, count + 1)]
        darkest = luminance(brackets[0])
        shadows = darkest <= np.quantile(darkest, 0.1)
        print(f"{count} brackets, gap {args.gap}, gamma {args.gamma}:")
        figures = [measure(f"bracket {n}", image, shadows) for n, image in enumerate(brackets, 1)]
        merged = measure("merged", np.asarray(result.image, dtype=np.float32), shadows)
        print(f"  clipped merged / brightest {merged[0] / max(figures[-1][0], 1e-9):.3f}; shadow std merged / "
              f"darkest {merged[1] / max(figures[0][1], 1e-9):.2f}; render time HDR / plain {seconds / plain_s:.2f}")
    backend.close()


if __name__ == "__main__":
    main()
