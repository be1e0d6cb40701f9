"""The cost of high resolution on the embedded model: peak memory of the tiled VAE, and seconds per image of each
high-resolution method at 2x and 4x the native size, measured in one run.

    python bench/highres.py                 # both parts
    python bench/highres.py --memory        # tiled VAE decode peak RSS, 256 to 1024 px
    python bench/highres.py --speed --seeds 3

--memory decodes latents of 256, 512, 768 and 1024 px with gridgen-tiny's VAE in a fresh process per size and
mode, and reads the child's peak RSS (VmHWM) less its RSS just before the decode: the memory the decode itself
needed (for the tiled decode, its GroupNorm estimate on the shrunk whole latents included). Tiled decode grows no
faster than linearly in the pixel count when its growth from 256 to 1024 px is at most the pixel ratio (16).
--speed renders each method's cell from its own seed (so no base image is shared through the stage cache) and
prints seconds per image; `demofusion_scale` is DemoFusion's txt2img mode. Figures depend on the machine: run it,
don't quote it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SIDES = (256, 512, 768, 1024)
CHILD = """
import re, sys, torch
from diffusers import AutoencoderKL
from gridgen.backends.sd.images import vae_tiling
from gridgen.tiny import TINY_MODEL_DIR
side, mode = int(sys.argv[1]), sys.argv[2]
torch.set_grad_enabled(False)
vae = AutoencoderKL.from_pretrained(TINY_MODEL_DIR / "vae").eval()
latents = torch.randn(1, 4, side // 4, side // 4, generator=torch.Generator().manual_seed(0))
def field(name):
    return int(re.search(name + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
before = field("VmRSS")
vae_tiling.decode(vae, latents, mode)
print(field("VmHWM") - before)
"""


def decode_peak_mb(side: int, mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(side), mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def memory() -> None:
    print("VAE decode, memory the decode needed (peak RSS less RSS before it), MB")
    print(f"{'side':>6} {'pixels':>9} {'tiled':>8} {'untiled':>8}")
    tiled, whole = {}, {}
    for side in SIDES:
        tiled[side], whole[side] = decode_peak_mb(side, "on"), decode_peak_mb(side, "off")
        print(f"{side:>6} {side * side:>9} {tiled[side]:>8.1f} {whole[side]:>8.1f}")
    pixels = (SIDES[-1] / SIDES[0]) ** 2
    for name, peaks in (("tiled", tiled), ("untiled", whole)):
        growth = peaks[SIDES[-1]] / max(peaks[SIDES[0]], 1e-6)
        verdict = "no faster than linear" if growth <= pixels else "faster than linear"
        print(f"{name}: {SIDES[0]} -> {SIDES[-1]} px grows x{growth:.2f} for x{pixels:.0f} pixels: {verdict}")
    print(f"untiled / tiled at {SIDES[-1]} px: x{whole[SIDES[-1]] / max(tiled[SIDES[-1]], 1e-6):.2f}")


# Each method as the params of one cell on gridgen-tiny (native 64 px), for a target of `side` px.
def methods(side: int) -> dict[str, dict]:
    scale = side / 64
    return {
        "txt2img at size": {"width": side, "height": side},
        "tile_diffusion": {"width": side, "height": side, "tile_diffusion": True},
        "lanczos": {"upscaler": "lanczos", "upscale_by": scale},
        "latent hires": {"upscaler": "latent", "upscale_by": scale},
        "hires:lanczos": {"upscaler": "hires:lanczos", "upscale_by": scale},
        "hires+tiled diff.": {"upscaler": "hires:lanczos", "upscale_by": scale, "tile_diffusion": True},
        "sd-upscale": {"upscaler": "sd-upscale", "upscale_by": scale, "tile_size": 64, "tile_overlap": 16},
        "demofusion": {"upscaler": "demofusion", "upscale_by": scale},
        "demofusion_scale": {"demofusion_scale": side // 64},  # the txt2img mode: native render, then phases
    }


def speed(seeds: int) -> None:
    from gridgen.backends import BackendContext
    from gridgen.backends.base import Cell
    from gridgen.backends.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(BackendContext(spec_dir=".", device="cpu"))
    base = {"prompt": "a red circle on a white background", "steps": 8, "sampler": "Euler", "hires_steps": 8}
    seed = 1000
    try:
        backend.render([Cell(index=0, key="warm", coords=("warm",), params={**base, "seed": 1})])  # model load
        print(f"seconds per image on gridgen-tiny (native 64 px, 8 steps), mean of {seeds} seeds")
        print(f"{'method':<18} {'2x (128 px)':>12} {'4x (256 px)':>12}")
        rows: dict[str, list[float]] = {}
        for side in (128, 256):
            for name, params in methods(side).items():
                times = []
                for _ in range(seeds):
                    seed += 1
                    cell = Cell(index=0, key=str(seed), coords=(str(seed),), params={**base, **params, "seed": seed})
                    started = time.perf_counter()
                    (result,) = backend.render([cell])
                    result.image.load()
                    times.append(time.perf_counter() - started)
                rows.setdefault(name, []).append(statistics.mean(times))
        for name, (at2, at4) in rows.items():
            print(f"{name:<18} {at2:>12.3f} {at4:>12.3f}")
    finally:
        backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="only the tiled VAE's memory")
    parser.add_argument("--speed", action="store_true", help="only the seconds per image")
    parser.add_argument("--seeds", type=int, default=2, help="cells per method and size for --speed")
    args = parser.parse_args()
    both = not args.memory and not args.speed
    if args.memory or both:
        memory()
    if args.speed or both:
        speed(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
