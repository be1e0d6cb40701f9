"""Outpainting mk2's settings and passes on gridgen-tiny: what the fall-off exponent and the colour variation do to
the matched-noise fill, and what drawing the sides one pass each costs.

- Fall-off: a 64x64 picture widened by 32 px per side is filled at exponents 0 to 4; for each, the share of the
  left strip's grey spectral energy above a quarter of the sampling rate (high frequencies: fine grain).
- Colour variation: a tinted grey picture (one pattern through all three channels, so its own colour spread is
  small) is filled at variations 0 to 1; for each, the mean spread of the fill's channels about their grey.
- Passes: one cell outpainted `left 32, right 32` as mk2 (two passes) and as poor_man (one pass), each rendered
  `--repeats` times in turn, and the ratio of their median times.

Not a test: nothing asserts.

    .venv/bin/python bench/outpaint_mk2.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.images.matched_noise import matched_noise

SIDE = 32


def picture(size: int = 64) -> np.ndarray:
    """Smooth colour gradients with a soft pattern, in 0..1."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return np.stack([x / size, y / size, 0.5 + 0.4 * np.sin(x / 4) * np.cos(y / 6)], axis=-1)


def widened(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image` with SIDE px of its edge stretched left and right, and the mask of the new strips."""
    canvas = np.pad(image, ((0, 0), (SIDE, SIDE), (0, 0)), mode="edge")
    new = np.ones(canvas.shape[:2], dtype=bool)
    new[:, SIDE:-SIDE] = False
    return canvas, new


def high_frequency_share(filled: np.ndarray) -> float:
    grey = filled[:, :SIDE].mean(axis=2)
    energy = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    rows, columns = np.abs(np.fft.fftfreq(grey.shape[0]))[:, None], np.abs(np.fft.fftfreq(grey.shape[1]))[None, :]
    return float(energy[np.maximum(rows, columns) > 0.25].sum() / energy.sum())


def colour_spread(pixels: np.ndarray) -> float:
    return float((pixels - pixels.mean(axis=1, keepdims=True)).std(axis=0).mean())


def pass_times(steps: int, repeats: int) -> dict[str, float]:
    base = {"model": "gridgen-tiny", "prompt": "a red square", "steps": steps, "sampler": "Euler", "cfg_scale": 5.0,
            "mask_blur": 4, "init_image": "init.png", "denoise": 0.8, "outpaint": f"left {SIDE}, right {SIDE}"}
    with tempfile.TemporaryDirectory() as folder:
        Image.fromarray((picture() * 255).round().astype(np.uint8)).save(Path(folder) / "init.png")
        backend = DiffusersBackend(BackendContext(spec_dir=Path(folder), device="cpu", cache_bytes=0))
        list(backend.render([Cell(0, "warm-up", ("w",), {**base, "steps": 2})]))  # loads the model
        times: dict[str, list[float]] = {"mk2": [], "poor_man": []}
        for repeat in range(repeats):
            for method in times:
                started = time.perf_counter()
                list(backend.render([Cell(0, method, (method,), {**base, "outpaint_method": method,
                                                                 "seed": 10 + repeat})]))
                times[method].append(time.perf_counter() - started)
        backend.close()
    return {method: statistics.median(found) for method, found in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    canvas, new = widened(picture())
    print("fall-off exponent -> high-frequency share of the fill")
    for falloff in (0, 0.5, 1, 2, 4):
        print(f"  {falloff:<4g} {high_frequency_share(matched_noise(canvas, new, falloff=falloff)):.4f}")
    grey = picture()[..., 2:3]
    tinted, new = widened(grey * np.array([0.9, 0.6, 0.3]) + np.array([0.05, 0.1, 0.2]))
    print(f"colour variation -> colour spread of the fill (the picture's own: {colour_spread(tinted[~new]):.3f})")
    for variation in (0, 0.05, 0.5, 1):
        print(f"  {variation:<4g} {colour_spread(matched_noise(tinted, new, colour_variation=variation)[new]):.3f}")
    times = pass_times(args.steps, args.repeats)
    print(f"median seconds per cell, {args.steps} steps: mk2 (two passes) {times['mk2']:.2f}, "
          f"poor_man (one pass) {times['poor_man']:.2f}; mk2 / poor_man {times['mk2'] / times['poor_man']:.2f}")


if __name__ == "__main__":
    main()
