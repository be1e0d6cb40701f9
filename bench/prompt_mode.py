"""How well Regional Prompter's prompt mode finds and redraws a region on gridgen-tiny.

For each seed, renders "a red circle on a white background" alone, and with `regions: Prompt` and the region
prompt "a blue circle on a white background, circle", and prints: the overlap (intersection over union, at the
latent size) of the region found for "circle" with the circle the main prompt alone draws, the share of the canvas
the region covers, and the colour the classifier reads in each render; then the mean overlap and how many
prompt-mode renders came out blue. Not a test: nothing asserts.

    .venv/bin/python bench/prompt_mode.py [--seeds 10] [--threshold 0.4] [--calc attention]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd import render
from gridgen.params import Registry
from gridgen.tiny import evaluate as ev

MAIN = "a red circle on a white background"
REGION = "a blue circle on a white background, circle"
FACTOR = 4  # gridgen-tiny's VAE: pixels per latent cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threshold", default="0.4")
    parser.add_argument("--calc", default="attention", choices=["attention", "latent"])
    args = parser.parse_args()
    found: dict[int, np.ndarray] = {}
    original = render.prompt_regions.find

    def keep(unet, prompts, batch, *rest, **kwargs):
        masks = original(unet, prompts, batch, *rest, **kwargs)
        found.update({int(batch[index]["seed"]): value[0] for index, value in masks.items()})
        return masks

    render.prompt_regions.find = keep
    base = {**Registry().defaults(), "steps": 20, "sampler": "DPM++ 2M", "width": 128, "height": 64,
            "region_calc": args.calc, "region_threshold": args.threshold}
    overlaps, blue = [], 0
    with tempfile.TemporaryDirectory() as folder:
        backend = DiffusersBackend(BackendContext(spec_dir=Path(folder), device="cpu"))
        print(f"{'seed':>4} {'overlap':>8} {'covers':>7} {'alone':>7} {'prompt mode':>12}")
        for seed in range(1, args.seeds + 1):
            (plain,) = backend.render([Cell(0, "plain", ("p",), {**base, "prompt": MAIN, "seed": seed})])
            (regional,) = backend.render([Cell(0, "prompt", ("r",), {**base, "prompt": f"{MAIN} BREAK {REGION}",
                                                                     "regions": "Prompt", "seed": seed})])
            pixels = np.asarray(plain.image.convert("RGB"), dtype=np.int32)
            height, width = pixels.shape[0] // FACTOR, pixels.shape[1] // FACTOR
            drawn = (np.abs(pixels - 255).sum(-1) > 120).reshape(height, FACTOR, width, FACTOR).mean((1, 3)) > 0.5
            mask = found[seed] > 0
            overlap = (drawn & mask).sum() / max((drawn | mask).sum(), 1)
            colours = [ev.classify(np.asarray(result.image.convert("RGB"))).color for result in (plain, regional)]
            overlaps.append(overlap)
            blue += colours[1] == "blue"
            print(f"{seed:>4} {overlap:>8.2f} {mask.mean():>7.2f} {colours[0]!s:>7} {colours[1]!s:>12}")
        backend.close()
    print(f"mean overlap {np.mean(overlaps):.2f}; blue in prompt mode: {blue} of {args.seeds}")


if __name__ == "__main__":
    main()
