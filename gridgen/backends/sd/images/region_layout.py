"""The region layout of a regional cell drawn over its image: the file the explorer shows as "Regions".

Each region is tinted with its Regional Prompter colour (the colour a region mask paints it in), its borders are
drawn, and its number (its place in the prompt, from 0 as in the extension) is written at its centre. A pixel
belongs to the region with the largest weight there; the base prompt, which counts everywhere, is named in the
corner with its ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gridgen.backends.sd.images import region_masks
from gridgen.backends.sd.text import regions

TINT = 0.4
BORDER = (255, 255, 255)
SHADOW = (0, 0, 0)


def files(image: Image.Image, params: dict[str, Any], load: regions.LoadImage,
          found: list[np.ndarray] | None = None) -> dict[str, Image.Image]:
    """A cell's extra files: `regions`, its layout over its image, when it has regions (`found`: prompt mode's
    region masks, as its denoising found them)."""
    return {"regions": draw(image, params, load, found)} if regions.active(params) else {}


def draw(image: Image.Image, params: dict[str, Any], load: regions.LoadImage,
         found: list[np.ndarray] | None = None) -> Image.Image:
    """`image` with the cell's regions tinted, bordered and numbered."""
    width, height = image.size
    layout = regions.layout(params, load, found)
    has_base = regions.split_prompt(str(params["prompt"])).base is not None
    areas = np.stack([_pixels(area, (height, width))
                      for _, area, _ in (layout[:-1] if regions.has_base_part(params) else layout)])
    labels = np.where(areas.max(0) > 0, areas.argmax(0), -1)  # -1: no region's (a mask's unpainted pixels)
    colours = region_masks.palette()[np.clip(labels, 0, region_masks.MAX_REGIONS - 1)].astype(np.float32)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    shown = np.where((labels >= 0)[..., None], (1 - TINT) * pixels + TINT * colours, pixels)
    edges = np.zeros_like(labels, dtype=bool)
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edges[1:] |= labels[1:] != labels[:-1]
    shown[edges] = BORDER
    drawn = Image.fromarray(shown.round().astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    font = ImageFont.load_default()
    first = 1 if regions.prompt_mode(params) and not has_base else 0  # the main prompt is part 0 there
    for number in range(len(areas)):
        ys, xs = np.nonzero(labels == number)
        if len(xs):
            _label(pen, (int(xs.mean()), int(ys.mean())), str(number + first), font)
    if has_base:
        _label(pen, (2, 2), f"base {float(params['base_ratio']):g}", font, anchor="la")
    return drawn


def _pixels(area: regions.Area | None, shape: tuple[int, int]) -> np.ndarray:
    """Where a region is, at the image's size (its weight aside: a region at weight 0 is still drawn)."""
    height, width = shape
    if isinstance(area, np.ndarray):
        return np.asarray(Image.fromarray(area.astype(np.float32)).resize((width, height), Image.NEAREST))
    found = np.zeros(shape, dtype=np.float32)
    x0, y0, x1, y1 = area or (0.0, 0.0, 1.0, 1.0)
    found[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = 1.0
    return found


def _label(pen: ImageDraw.ImageDraw, at: tuple[int, int], text: str, font, anchor: str = "mm") -> None:
    x, y = at
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # a dark outline keeps the text readable on any image
        pen.text((x + dx, y + dy), text, fill=SHADOW, font=font, anchor=anchor)
    pen.text(at, text, fill=BORDER, font=font, anchor=anchor)
