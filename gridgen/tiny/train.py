"""Trains the gridgen-tiny model family on the procedural shapes data set: `python -m gridgen.tiny.train`.

`--variant txt2img` trains, from nothing, the three parts of a Stable Diffusion 1.x folder, shrunk
until they train on a 2-core CPU in well under an hour:

1. an `AutoencoderKL` (factor 4: 64 px images <-> 4x16x16 latents), on freshly drawn images;
2. with the VAE frozen, a pool of latents is encoded once, and a `UNet2DConditionModel` (4 input
   channels, epsilon prediction on SD's noise schedule) learns to denoise them, conditioned by a
   `CLIPTextModel` trained with it; 10% of the captions are dropped to the empty prompt so
   classifier-free guidance works. The UNet and text encoder saved are an EMA of their weights.

The tokenizer is a word-level `CLIPTokenizer`: its BPE merges join every grammar word into one
token. Everything is drawn from `--seed`, so a run is repeatable on the same machine; the defaults
are the settings that made the shipped weights (about 45 minutes on a busy 2-core CPU, one
thread). CUDA is used when present. The UNet's learning rate is constant after warmup, so the
checkpoint a longer run writes at step N (`--checkpoint-every`) is exactly what `--steps N` gives.

`--variant inpaint`, `x4` and `sam` train the companions from the shipped txt2img folder (see
`gridgen.tiny.inpaint`, `gridgen.tiny.upscaler`, `gridgen.tiny.sam`), each with its own defaults.

This module is the command line only. Each variant's module owns its training; `gridgen.tiny.tokenizer`,
`gridgen.tiny.models` and `gridgen.tiny.denoiser_training` hold the parts, folders and loop they share.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from gridgen.tiny import TINY_VARIANT_DIRS
from gridgen.tiny.denoiser_training import Logger, Settings, pick_device

VARIANTS = ("txt2img", "inpaint", "x4", "sam")


def variant_trainers() -> dict[str, tuple[Callable, dict]]:
    """Each variant's training function and the settings it changes from `Settings`' defaults."""
    from gridgen.tiny import inpaint, sam, txt2img, upscaler

    return {"txt2img": (txt2img.train, {}), "inpaint": (inpaint.train, inpaint.DEFAULTS),
            "x4": (upscaler.train, upscaler.DEFAULTS), "sam": (sam.train, sam.DEFAULTS)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="txt2img")
    parser.add_argument("--out", type=Path, help="folder to write (default: the variant's folder in the package)")
    for field in fields(Settings):
        flags = ["--" + field.name.replace("_", "-")] + (["--steps"] if field.name == "unet_steps" else [])
        parser.add_argument(*flags, dest=field.name, type=type(field.default),
                            help=f"(default: {field.default}, or the variant's own)")
    # One thread by default: on a busy shared CPU a second thread mostly waits at torch's barriers
    # (ten times slower here), and the shipped weights were made with one, which float sums depend on.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer, variant_defaults = variant_trainers()[args.variant]
    given = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name) is not None}
    settings = Settings(**{**variant_defaults, **given})
    out = args.out or TINY_VARIANT_DIRS[args.variant]
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    log, device = Logger(), pick_device()
    log(f"{args.variant} on {device}: {json.dumps(asdict(settings))}")
    trainer(out, settings, device, log)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
