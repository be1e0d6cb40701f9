"""How often regional prompting puts each region's colour in its half, per method, on gridgen-tiny.

    python bench/region_colours.py [--seeds 20] [--cfg 7] [--steps 20]

Renders "a red circle on a white background BREAK a blue square on a white background" (and the prompts swapped)
on a 128x64 canvas with `regions: Columns`, over a seed axis, once per method (region_calc latent / attention, with
and without a base prompt, several CFG scales), and prints the share of halves whose classified colour is the one
its region prompt names: the figure the regional colour test asks to reach 0.8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridgen.backends import BackendContext  # noqa: E402
from gridgen.backends.base import Cell  # noqa: E402
from gridgen.backends.diffusers_backend import DiffusersBackend  # noqa: E402
from gridgen.params import Registry  # noqa: E402
from gridgen.tiny import evaluate as ev  # noqa: E402

RED, BLUE = "a red circle on a white background", "a blue square on a white background"


def rate(backend: DiffusersBackend, seeds: range, prompt: str, wanted: tuple[str, str], **params) -> float:
    base = {**Registry().defaults(), "steps": 20, "sampler": "DPM++ 2M", "cfg_scale": 7.0, "width": 128,
            "height": 64, "regions": "Columns", **params}
    cells = [Cell(index=i, key=str(seed), coords=(str(seed),), params={**base, "prompt": prompt, "seed": seed})
             for i, seed in enumerate(seeds)]
    right = 0
    for result in backend.render(cells):
        image = np.asarray(result.image.convert("RGB"))
        left, other = ev.classify(image[:, :64]), ev.classify(image[:, 64:])
        right += (left.color == wanted[0]) + (other.color == wanted[1])
    return right / (2 * len(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, nargs="+", default=[7.0])
    parser.add_argument("--calc", nargs="+", default=["latent", "attention"])
    args = parser.parse_args()
    seeds = range(1, args.seeds + 1)
    with tempfile.TemporaryDirectory() as folder:
        backend = DiffusersBackend(BackendContext(spec_dir=Path(folder), device="cpu"))
        print(f"{'method':<44} {'red|blue':>9} {'blue|red':>9} {'both':>6}")
        for calc in args.calc:
            for cfg in args.cfg:
                for base_ratio in (None, 0.2):
                    base = f"{RED.split(' on ')[0]} and {BLUE.split(' on ')[0]} on a white background ADDBASE "
                    prefix = base if base_ratio is not None else ""
                    extra = {"base_ratio": base_ratio} if base_ratio is not None else {}
                    common = dict(region_calc=calc, cfg_scale=cfg, steps=args.steps, **extra)
                    forward = rate(backend, seeds, f"{prefix}{RED} BREAK {BLUE}", ("red", "blue"), **common)
                    swapped = rate(backend, seeds, f"{prefix}{BLUE} BREAK {RED}", ("blue", "red"), **common)
                    name = f"{calc}, cfg {cfg:g}" + (f", base prompt at {base_ratio}" if base_ratio else "")
                    print(f"{name:<44} {forward:>9.2f} {swapped:>9.2f} {(forward + swapped) / 2:>6.2f}", flush=True)
        backend.close()


if __name__ == "__main__":
    main()
