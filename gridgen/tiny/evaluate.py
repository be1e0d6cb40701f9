"""Measures gridgen-tiny against its quality bars: `python -m gridgen.tiny.evaluate [--model DIR]`.

It owns the classifier that reads an image of the shapes data set back (background, dominant
foreground color, shape, saturation) and the figures the quality tests assert: color and shape
accuracy at CFG 7, color accuracy at CFG 0, foreground saturation at CFG 1 and 7, color accuracy
of every sampler, and the batch-equivalence error. Images are rendered through gridgen's own
diffusers backend, exactly as a grid renders them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from gridgen.tiny import TINY_MODEL_DIR
from gridgen.tiny import data as shapes

# The quality bars the shipped txt2img weights must meet.
COLOR_BAR = 0.90
SHAPE_BAR = 0.75
UNCOND_COLOR_BAR = 0.40
SAMPLER_COLOR_BAR = 0.80
BATCH_MAE_BAR = 1 / 255  # in [0, 1] pixel units
STEPS = 20  # A1111's default step count; each sampler is judged at its own `usual_steps`
SEEDS = (1, 2)

PALETTE_NAMES = list(shapes.COLORS)
PALETTE = np.array([shapes.COLORS[name] for name in PALETTE_NAMES], dtype=np.float32)
_BACKGROUND_NAMES = list(shapes.BACKGROUNDS)
_BACKGROUNDS = np.array([shapes.BACKGROUNDS[name] for name in _BACKGROUND_NAMES], dtype=np.float32)
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background above which a pixel is foreground


@dataclass(frozen=True)
class Reading:
    """What the classifier sees in one image; color and shape are None when it finds no shape."""

    background: str
    color: str | None
    shape: str | None
    saturation: float  # mean HSV saturation of the foreground pixels, 0..1
    fill: float  # shape area / bounding-box area
    foreground: float  # fraction of the image that is foreground


def _border(image: np.ndarray, width: int = 2) -> np.ndarray:
    return np.concatenate([image[:width].reshape(-1, 3), image[-width:].reshape(-1, 3),
                           image[:, :width].reshape(-1, 3), image[:, -width:].reshape(-1, 3)])


def nearest(colors: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return np.argmin(((colors[:, None, :] - palette[None, :, :]) ** 2).sum(-1), axis=1)


_GRID = 32  # a shape's bounding box is resampled to this many pixels a side before it is measured
_v, _u = (np.mgrid[0:_GRID, 0:_GRID] + 0.5) / _GRID
_CORNERS = (_u - 0.5) ** 2 + (_v - 0.5) ** 2 > 0.25  # the box outside its inscribed circle
_TOP_CORNERS, _BOTTOM_CORNERS = _CORNERS & (_v < 0.5), _CORNERS & (_v > 0.5)


def shape_features(mask: np.ndarray) -> np.ndarray | None:
    """(fill ratio, top-corner coverage, bottom-corner coverage) of a shape's mask, or None if it is tiny.

    The corners are the parts of the bounding box outside its inscribed circle: a square covers all
    four, a circle none, an upright triangle only part of the bottom two.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return None
    box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    scaled = ndimage.zoom(box, (_GRID / box.shape[0], _GRID / box.shape[1]), order=1, grid_mode=True,
                          mode="nearest")
    return np.array([box.mean(), scaled[_TOP_CORNERS].mean(), scaled[_BOTTOM_CORNERS].mean()])


def _prototypes() -> dict[str, np.ndarray]:
    return {shape: shape_features(shapes.shape_mask(shape, 4, 4, 56)) for shape in shapes.SHAPES}


_PROTOTYPES = _prototypes()
_WEIGHTS = np.array([2.0, 1.0, 1.0])  # the fill ratio is the steadiest of the three under blur and specks


def classify_shape(mask: np.ndarray) -> tuple[str | None, float]:
    """Circle, square or triangle from a shape's mask, by the nearest ideal shape in fill ratio and
    corner coverage; returns the shape and the fill ratio."""
    features = shape_features(mask)
    if features is None:
        return None, 0.0
    best = min(_PROTOTYPES, key=lambda shape: float((((features - _PROTOTYPES[shape]) * _WEIGHTS) ** 2).sum()))
    return best, float(features[0])


def classify(image) -> Reading:
    """Read an RGB image (PIL or HxWx3 uint8) of one shape on a plain background."""
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    background_rgb = np.median(_border(pixels), axis=0)
    background = _BACKGROUND_NAMES[int(nearest(background_rgb[None], _BACKGROUNDS)[0])]
    # smoothed a little, so that pixel noise does not fray the shape's outline
    distance = ndimage.gaussian_filter(np.sqrt(((pixels - background_rgb) ** 2).sum(-1)), 0.7)
    foreground = distance > FOREGROUND_DISTANCE
    fraction = float(foreground.mean())
    if foreground.sum() < 16:
        return Reading(background, None, None, 0.0, 0.0, fraction)
    # the color votes come from the shape's core: its blurred rim mixes in the background's color
    core = foreground & (distance >= 0.6 * np.percentile(distance[foreground], 95))
    colors = pixels[core]
    votes = np.bincount(nearest(colors, PALETTE), minlength=len(PALETTE))
    color = PALETTE_NAMES[int(votes.argmax())]
    high, low = colors.max(-1), colors.min(-1)
    saturation = float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)))
    # an opening by a 3x3 square drops one-pixel specks and spurs but keeps a square's corners
    labels, count = ndimage.label(ndimage.binary_opening(foreground, structure=np.ones((3, 3))))
    if count == 0:
        labels, count = ndimage.label(foreground)
    sizes = ndimage.sum(np.ones_like(labels), labels, index=range(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    shape, fill = classify_shape(ndimage.binary_fill_holes(largest))
    return Reading(background, color, shape, saturation, fill, fraction)


# The prompts every figure is measured on


@dataclass(frozen=True)
class Case:
    color: str
    shape: str
    background: str
    seed: int

    @property
    def prompt(self) -> str:
        return shapes.caption(self.color, self.shape, self.background)


def cases(seeds: Sequence[int] = SEEDS) -> list[Case]:
    """6 colors x 3 shapes x `seeds`; the background cycles so that each is used equally."""
    out = []
    for si, seed in enumerate(seeds):
        for ci, color in enumerate(shapes.COLORS):
            for hi, shape in enumerate(shapes.SHAPES):
                background = _BACKGROUND_NAMES[(ci + hi + si) % len(_BACKGROUND_NAMES)]
                out.append(Case(color, shape, background, seed))
    return out


# Rendering through the backend


def make_backend(model: Path = TINY_MODEL_DIR, max_batch: int = 64):
    from gridgen.backends.base import BackendContext
    from gridgen.backends.diffusers_backend import DiffusersBackend

    context = BackendContext(spec_dir=Path(model).parent, device="cpu", dtype="fp32", max_batch=max_batch,
                             cache_bytes=0)
    return DiffusersBackend(context)


def render(backend, model: Path, items: Iterable[Case], **params) -> list[np.ndarray]:
    """Render one 64x64 image per case through `backend`; `params` (sampler, steps, cfg_scale, ...) apply to all."""
    from gridgen.backends.base import Cell

    base = {"negative_prompt": "", "steps": STEPS, "cfg_scale": 7.0, "sampler": "DPM++ 2M",
            "schedule": "automatic", "model": str(model), "width": 64, "height": 64, "clip_skip": 1}
    cells = [Cell(index=i, key=str(i), coords=(str(i),),
                  params={**base, "prompt": case.prompt, "seed": case.seed, **params})
             for i, case in enumerate(items)]
    by_index = {r.cell.index: np.asarray(r.image.convert("RGB")) for r in backend.render(cells)}
    return [by_index[i] for i in range(len(cells))]


@dataclass(frozen=True)
class Scores:
    color: float
    shape: float
    saturation: float  # mean over images with a foreground
    readings: tuple[Reading, ...]


def score(items: Sequence[Case], images: Sequence[np.ndarray]) -> Scores:
    readings = [classify(image) for image in images]
    color = np.mean([r.color == c.color for r, c in zip(readings, items, strict=True)])
    shape = np.mean([r.shape == c.shape for r, c in zip(readings, items, strict=True)])
    saturations = [r.saturation for r in readings if r.color is not None]
    return Scores(float(color), float(shape), float(np.mean(saturations)) if saturations else 0.0, tuple(readings))


def batch_equivalence(backend, model: Path, sampler: str = "DPM++ 2M") -> float:
    """Largest mean absolute pixel difference (0..1) between a cell rendered alone and inside a batch of 8."""
    items = cases()[:8]
    together = render(backend, model, items, sampler=sampler)
    worst = 0.0
    for case, image in zip(items[:2], together[:2], strict=True):
        (alone,) = render(backend, model, [case], sampler=sampler)
        worst = max(worst, float(np.abs(alone.astype(np.float64) - image.astype(np.float64)).mean() / 255))
    return worst


def sampler_cases() -> list[Case]:
    """12 cells for the sampler sweep: each color twice, on two seeds, the shapes and backgrounds cycling.

    Fewer than the main 36 so that 19 samplers stay fast, enough to tell a mapping bug (which
    scrambles or washes out every color) from one unlucky cell.
    """
    out = []
    for si, seed in enumerate(SEEDS):
        for ci, color in enumerate(shapes.COLORS):
            shape = shapes.SHAPES[(ci + si) % len(shapes.SHAPES)]
            background = _BACKGROUND_NAMES[(ci + 2 * si) % len(_BACKGROUND_NAMES)]
            out.append(Case(color, shape, background, seed))
    return out


def contact_sheet(images: Sequence[np.ndarray], columns: int):
    from PIL import Image

    rows = -(-len(images) // columns)
    side = images[0].shape[0]
    sheet = np.full((rows * (side + 2), columns * (side + 2), 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * (side + 2):r * (side + 2) + side, c * (side + 2):c * (side + 2) + side] = image
    return Image.fromarray(sheet)


def main(argv: list[str] | None = None) -> None:
    from gridgen.backends.sd.denoise.samplers import SAMPLERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY_MODEL_DIR)
    parser.add_argument("--quick", action="store_true", help="only the CFG 7 figures")
    parser.add_argument("--sheet", type=Path, help="also save the CFG 7 images as one PNG contact sheet here")
    args = parser.parse_args(argv)
    backend = make_backend(args.model)
    items = cases()

    def timed(label: str, fn):
        start = time.perf_counter()
        value = fn()
        print(f"  ({label}: {time.perf_counter() - start:.1f}s)")
        return value

    images = timed("cfg 7", lambda: render(backend, args.model, items, cfg_scale=7.0))
    main_scores = score(items, images)
    if args.sheet:
        contact_sheet(images, columns=len(shapes.SHAPES)).save(args.sheet)
    print(f"CFG 7, DPM++ 2M, {STEPS} steps, {len(items)} cells: color {main_scores.color:.1%} "
          f"(bar >= {COLOR_BAR:.0%}), shape {main_scores.shape:.1%} (bar >= {SHAPE_BAR:.0%})")
    for case, reading in zip(items, main_scores.readings, strict=True):
        if reading.color != case.color or reading.shape != case.shape:
            print(f"    miss: {case.prompt} seed {case.seed} -> {reading}")
    if args.quick:
        return
    uncond = timed("cfg 0", lambda: score(items, render(backend, args.model, items, cfg_scale=0.0)))
    print(f"CFG 0: color {uncond.color:.1%} (bar <= {UNCOND_COLOR_BAR:.0%})")
    empty = timed("empty prompt", lambda: score(items, render(backend, args.model, items, cfg_scale=1.0,
                                                                   prompt="")))
    print(f"unconditional prediction (empty prompt, CFG 1): color {empty.color:.1%}")
    cfg1 = timed("cfg 1", lambda: score(items, render(backend, args.model, items, cfg_scale=1.0)))
    print(f"saturation: CFG 1 {cfg1.saturation:.3f}, CFG 7 {main_scores.saturation:.3f} (bar: CFG 7 higher); "
          f"CFG 1 color {cfg1.color:.1%}, shape {cfg1.shape:.1%}")
    subset = sampler_cases()
    for sampler in SAMPLERS:
        for steps in dict.fromkeys((sampler.usual_steps, STEPS)):
            result = timed(sampler.name, lambda s=sampler, n=steps: score(
                subset, render(backend, args.model, subset, sampler=s.name, steps=n)))
            judged = f"bar >= {SAMPLER_COLOR_BAR:.0%}" if steps == sampler.usual_steps else "not its usual count"
            print(f"sampler {sampler.name!r} at {steps} steps: color {result.color:.1%} shape {result.shape:.1%} "
                  f"({judged}, {len(subset)} cells)")
    mae = batch_equivalence(backend, args.model)
    print(f"batch equivalence: worst MAE {mae * 255:.4f}/255 (bar <= 1/255)")


if __name__ == "__main__":
    main()
