"""Measures the inpaint, x4 and SAM variants of gridgen-tiny against their quality bars:
`python -m gridgen.tiny.evaluate_variants [--inpaint DIR] [--x4 DIR] [--sam DIR]`.

Each runs through its library's own code path (diffusers' `StableDiffusionInpaintPipeline` and
`StableDiffusionUpscalePipeline`, transformers' `SamModel` with `SamProcessor`), which is what
"loadable by the same code paths as a full-size model" promises, on held-out images of the shapes
data set (a seed the training never draws from).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from gridgen.tiny import TINY_VARIANT_DIRS
from gridgen.tiny import data as shapes
from gridgen.tiny.evaluate import FOREGROUND_DISTANCE, PALETTE, PALETTE_NAMES, nearest
from gridgen.tiny.inpaint import mask_around

HELDOUT_SEED = 31_337
STEPS = 20
# The quality bars. A fill "takes the prompted color" has no number of its own; the txt2img color bar is used.
REMOVE_BAR = 0.90  # fraction of masked pixels that end near the background color
FILL_COLOR_BAR = 0.90  # fraction of fills whose masked region is mostly the prompted color
PSNR_GAIN_BAR = 1.0  # dB over bicubic at noise_level 20
NOISE_LEVELS = (0, 50, 150, 300)
SAM_IOU_BAR = 0.85
INPAINT_GROW = 4  # px the evaluation masks extend past the shape
UPSCALE_CFG = 1.0  # the x4 model follows its input most closely without guidance


def heldout(n: int) -> list[shapes.Sample]:
    return shapes.make_batch(HELDOUT_SEED, n)


def _generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(i) for i in range(n)]


def _pipeline(cls, folder: Path):
    pipe = cls.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class InpaintFigures:
    removed: float  # mean fraction of masked pixels near the background color, background-only prompt
    fill_color: float  # fraction of fills whose masked pixels are mostly the prompted (other) color
    outside_error: float  # mean absolute error outside the mask, 0..255 (the pipeline does not paste back)


def inpaint_figures(folder: Path = TINY_VARIANT_DIRS["inpaint"], n: int = 24) -> InpaintFigures:
    from diffusers import StableDiffusionInpaintPipeline

    pipe = _pipeline(StableDiffusionInpaintPipeline, folder)
    samples = heldout(n)
    masks = [mask_around(s, INPAINT_GROW, box=False) for s in samples]
    images = [Image.fromarray(s.image) for s in samples]
    mask_images = [Image.fromarray(m.astype(np.uint8) * 255) for m in masks]

    def run(prompts: list[str]) -> np.ndarray:
        out = pipe(prompts, image=images, mask_image=mask_images, height=shapes.SIZE, width=shapes.SIZE,
                   num_inference_steps=STEPS, guidance_scale=7.0, generator=_generators(n), output_type="np")
        return _to_uint8(out.images).astype(np.float32)

    removed = run([shapes.background_caption(s.background) for s in samples])
    colors = list(shapes.COLORS)
    others = [colors[(colors.index(s.color) + 1 + i % (len(colors) - 1)) % len(colors)] for i, s in enumerate(samples)]
    filled = run([shapes.caption(other, s.shape, s.background) for other, s in zip(others, samples, strict=True)])

    near, hits, outside = [], [], []
    for sample, mask, gone, fill, other in zip(samples, masks, removed, filled, others, strict=True):
        background = np.array(shapes.BACKGROUNDS[sample.background], dtype=np.float32)
        near.append(float((np.linalg.norm(gone[mask] - background, axis=-1) < FOREGROUND_DISTANCE).mean()))
        region = fill[mask]
        painted = region[np.linalg.norm(region - background, axis=-1) >= FOREGROUND_DISTANCE]
        votes = np.bincount(nearest(painted, PALETTE), minlength=len(PALETTE)) if len(painted) else None
        hits.append(votes is not None and PALETTE_NAMES[int(votes.argmax())] == other)
        outside.append(float(np.abs(gone[~mask] - sample.image[~mask]).mean()))
    return InpaintFigures(float(np.mean(near)), float(np.mean(hits)), float(np.mean(outside)))


@dataclass(frozen=True)
class UpscaleFigures:
    psnr_model: float  # mean PSNR (dB) of the x4 output at noise_level 20 against the 64 px original
    psnr_bicubic: float  # the same for a bicubic 4x of the 16 px input
    psnr_vae: float  # the same for the 64 px original through the pipeline's VAE alone: what decoding costs
    change_by_level: tuple[float, ...]  # mean |output(level) - output(0)| (0..255) for each of NOISE_LEVELS


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


@torch.no_grad()
def vae_round_trip(vae, images: list[np.ndarray]) -> np.ndarray:
    """`images` (uint8, H x W x 3) encoded by `vae` and decoded again, its latent means taken as they are: the
    best any output of a pipeline decoding with this VAE can match them."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(vae.device, vae.dtype)
    decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().cpu()
    return _to_uint8(decoded.permute(0, 2, 3, 1).add(1).div(2).numpy())


def upscale_figures(folder: Path = TINY_VARIANT_DIRS["x4"], n: int = 24) -> UpscaleFigures:
    from diffusers import StableDiffusionUpscalePipeline

    pipe = _pipeline(StableDiffusionUpscalePipeline, folder)
    samples = heldout(n)
    side = shapes.SIZE // 4
    small = [Image.fromarray(s.image).resize((side, side), Image.Resampling.BICUBIC) for s in samples]
    prompts = [s.caption for s in samples]

    def run(level: int) -> np.ndarray:
        out = pipe(prompts, image=small, noise_level=level, num_inference_steps=STEPS, guidance_scale=UPSCALE_CFG,
                   generator=_generators(n), output_type="np")
        return _to_uint8(out.images)

    at_20 = run(20)
    bicubic = [np.asarray(img.resize((shapes.SIZE, shapes.SIZE), Image.Resampling.BICUBIC)) for img in small]
    by_level = {level: run(level).astype(np.float32) for level in NOISE_LEVELS}
    change = tuple(float(np.abs(by_level[level] - by_level[0]).mean()) for level in NOISE_LEVELS)
    round_trip = vae_round_trip(pipe.vae, [s.image for s in samples])
    return UpscaleFigures(
        float(np.mean([psnr(out, s.image) for out, s in zip(at_20, samples, strict=True)])),
        float(np.mean([psnr(up, s.image) for up, s in zip(bicubic, samples, strict=True)])),
        float(np.mean([psnr(back, s.image) for back, s in zip(round_trip, samples, strict=True)])),
        change)


@dataclass(frozen=True)
class SamFigures:
    point_iou: float  # mean IoU of the mask SAM rates best, prompted with one point on the shape
    box_iou: float  # mean IoU of the mask prompted with the shape's bounding box


def central_point(mask: np.ndarray) -> tuple[float, float]:
    """The pixel center of `mask` farthest from its edge, (x, y): where a user would click."""
    depth = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x) + 0.5, float(y) + 0.5


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@torch.no_grad()
def sam_figures(folder: Path = TINY_VARIANT_DIRS["sam"], n: int = 100) -> SamFigures:
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = SamProcessor.from_pretrained(folder)
    samples = heldout(n)
    images = [s.image for s in samples]

    def masks(inputs, multimask: bool) -> list[np.ndarray]:
        outputs = model(**{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")},
                        multimask_output=multimask)
        full = processor.image_processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"],
                                                            inputs["reshaped_input_sizes"])
        best = outputs.iou_scores[:, 0].argmax(-1)
        return [m[0, int(i)].numpy().astype(bool) for m, i in zip(full, best, strict=True)]

    by_point = masks(processor(images, input_points=[[[central_point(s.mask)]] for s in samples],
                               input_labels=[[[1]] for _ in samples], return_tensors="pt"), multimask=True)
    by_box = masks(processor(images, input_boxes=[[list(map(float, s.box))] for s in samples], return_tensors="pt"),
                   multimask=False)
    return SamFigures(float(np.mean([mask_iou(m, s.mask) for m, s in zip(by_point, samples, strict=True)])),
                      float(np.mean([mask_iou(m, s.mask) for m, s in zip(by_box, samples, strict=True)])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inpaint", type=Path, default=TINY_VARIANT_DIRS["inpaint"])
    parser.add_argument("--x4", type=Path, default=TINY_VARIANT_DIRS["x4"])
    parser.add_argument("--sam", type=Path, default=TINY_VARIANT_DIRS["sam"])
    parser.add_argument("--only", choices=("inpaint", "x4", "sam"))
    args = parser.parse_args(argv)
    if args.only in (None, "inpaint"):
        f = inpaint_figures(args.inpaint)
        print(f"inpaint ({args.inpaint}): removal leaves {f.removed:.1%} of masked pixels near the background "
              f"(bar >= {REMOVE_BAR:.0%}); a new color fills the mask in {f.fill_color:.1%} of cells "
              f"(bar >= {FILL_COLOR_BAR:.0%}); mean change outside the mask {f.outside_error:.2f}/255")
    if args.only in (None, "x4"):
        u = upscale_figures(args.x4)
        changes = ", ".join(f"{level}: {c:.2f}" for level, c in zip(NOISE_LEVELS, u.change_by_level, strict=True))
        print(f"x4 ({args.x4}), noise_level 20, CFG {UPSCALE_CFG:g}: PSNR {u.psnr_model:.2f} dB vs bicubic "
              f"{u.psnr_bicubic:.2f} dB, gain {u.psnr_model - u.psnr_bicubic:+.2f} dB (bar >= {PSNR_GAIN_BAR:g}); "
              f"the VAE alone reconstructs the 64 px originals at {u.psnr_vae:.2f} dB; "
              f"change from noise_level 0 by level (/255): {changes}")
    if args.only in (None, "sam"):
        f = sam_figures(args.sam)
        print(f"sam ({args.sam}), 100 held-out images: mean IoU {f.point_iou:.3f} from a point, "
              f"{f.box_iou:.3f} from a box (bar >= {SAM_IOU_BAR})")


if __name__ == "__main__":
    main()
