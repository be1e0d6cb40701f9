"""Fits gridgen-tiny's linear maps between latents and RGB and ships them: `python -m gridgen.tiny.latent_rgb`.

Latent colour grading needs to read brightness and colour off the latents and to know which way to move them.
Stable Diffusion's VAEs have known channel meanings; a VAE of its own (gridgen-tiny's) does not, so both are
measured: images of the shapes data set are colour graded at random (saturation, brightness and colour shifts
per image, so that colour varies apart from shape), encoded (the posterior mean times the VAE's scaling factor:
the latents the UNet works on), and averaged down to the latent grid. Least squares over every latent cell
then fits `latent_to_rgb` (RGB in [-1, 1] = matrix @ latent + bias, to read colour) and `rgb_to_latent`
(latent change = matrix @ RGB change, to move it). A small VAE's latents are far from linear in colour, so the
two are fitted each way rather than one inverted. The JSON goes next to the VAE's config as `latent_rgb.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gridgen.fsutil import atomic_write_text
from gridgen.tiny import TINY_MODEL_DIR
from gridgen.tiny import data as shapes

FILE_NAME = "latent_rgb.json"
# ITU-R BT.601 RGB to Y, Cb, Cr; the grades are drawn in those coordinates.
YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def graded_images(samples: int, seed: int) -> np.ndarray:
    """Shapes images, (n, 3, 64, 64) in [-1, 1], each with its own random saturation (0 to 2), brightness and
    colour shift."""
    rng = np.random.default_rng(seed)
    ycc = np.einsum("ij,bjhw->bihw", YCBCR, shapes.to_tensor_array(shapes.make_batch(seed, samples)))
    ycc[:, 1:] *= rng.uniform(0, 2, (samples, 1, 1, 1))
    ycc[:, :1] += rng.uniform(-0.5, 0.5, (samples, 1, 1, 1))
    ycc[:, 1:] += rng.uniform(-0.25, 0.25, (samples, 2, 1, 1))
    return np.einsum("ij,bjhw->bihw", np.linalg.inv(YCBCR), ycc).clip(-1, 1).astype(np.float32)


def _least_squares(inputs: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix, bias, R^2 per output) of outputs = matrix @ inputs + bias."""
    design = np.hstack([inputs, np.ones((len(inputs), 1))])
    solution, *_ = np.linalg.lstsq(design, outputs, rcond=None)
    r2 = 1 - (outputs - design @ solution).var(axis=0) / outputs.var(axis=0)
    return solution[:-1].T, solution[-1], r2


def fit(vae_dir: Path, samples: int = 512, seed: int = 19) -> dict:
    """Both maps of the VAE in `vae_dir`, with their fits (R^2 per output)."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    images = torch.from_numpy(graded_images(samples, seed))
    with torch.inference_mode():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    rgb = torch.nn.functional.avg_pool2d(images, images.shape[-1] // latents.shape[-1])
    cells_latent = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double().numpy()
    cells_rgb = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    read, bias, read_r2 = _least_squares(cells_latent, cells_rgb)
    move, _, move_r2 = _least_squares(cells_rgb, cells_latent)
    return {"latent_to_rgb": {"matrix": read.round(6).tolist(), "bias": bias.round(6).tolist(),
                              "r2": read_r2.round(4).tolist()},
            "rgb_to_latent": {"matrix": move.round(6).tolist(), "r2": move_r2.round(4).tolist()},
            "about": "for the UNet's (scaled) latents and RGB in [-1, 1]; fitted by gridgen.tiny.latent_rgb on "
                     f"{samples} randomly graded shapes images"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=TINY_MODEL_DIR / "vae", help="the VAE folder to fit")
    args = parser.parse_args(argv)
    found = fit(args.vae)
    atomic_write_text(args.vae / FILE_NAME, json.dumps(found, indent=2) + "\n")
    print(f"wrote {args.vae / FILE_NAME}: R^2 {found['latent_to_rgb']['r2']} (read), "
          f"{found['rgb_to_latent']['r2']} (move)")


if __name__ == "__main__":
    main()
