"""Regional Prompter's mask mode: the regions of a `region_mask` image, named by its colours.

The extension paints region n in the n-th of its deterministic colours: hues 0, 1/2, 1/4, 3/4, 1/8, 3/8, ... (each
round halves the step and takes the hues between the ones already used) at saturation and value 0.5, so region 0 is
(128, 64, 64), a dull red, and region 1 (64, 128, 128), a dull cyan. The colours present in the mask, in that order,
are the regions in the prompt's order; a colour missing from the mask takes no region number, as in the extension.
Pixels of no region colour (the white canvas, anti-aliased edges) belong to the first region, or, with ADDBASE, to
the base prompt alone.

Areas are float arrays of the mask's own size, 1 inside; they are stretched to the canvas where they are applied.
Nothing here needs torch.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
from PIL import Image

MAX_REGIONS = 16
# The RGB distance within which a pixel counts as a region colour: under half the closest two colours' distance
# (17.9 among the first 16), so a pixel is near one colour at most. Lossless files (PNG) keep colours exact.
TOLERANCE = 8.0


@lru_cache(maxsize=1)
def palette(count: int = MAX_REGIONS) -> np.ndarray:
    """(count, 3) uint8: the region colours in Regional Prompter's order."""
    hues, step, cycle = [], 0.0, -1
    for index in range(count):
        level = int(np.ceil(np.log2(index + 1)))
        if level == 0:
            hue = 0.0
        elif level != cycle:
            step = 1 / 2 ** level
            hue = step
        else:
            hue = hues[-1] + 2 * step
        cycle = level
        hues.append(hue)
    rgb = np.array([colorsys.hsv_to_rgb(hue, 0.5, 0.5) for hue in hues])
    return (rgb * 256).astype(np.uint8)


def colour_indices(image: Image.Image) -> np.ndarray:
    """(height, width) int: each pixel's region colour number, or -1 for none."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    found = np.full(pixels.shape[:2], -1, dtype=np.int64)
    for number, colour in enumerate(palette().astype(np.float32)):
        found[((pixels - colour) ** 2).sum(-1) <= TOLERANCE ** 2] = number
    return found

def areas(image: Image.Image) -> tuple[list[np.ndarray], np.ndarray]:
    """The mask's regions in prompt order (float arrays, 1 inside) and the pixels of none of them."""
    indices = colour_indices(image)
    present = [number for number in range(MAX_REGIONS) if (indices == number).any()]
    return [(indices == number).astype(np.float32) for number in present], (indices < 0).astype(np.float32)


def count_problem(image: Image.Image, wanted: int) -> str | None:
    """Why the mask cannot serve a prompt of `wanted` regions, or None."""
    found = len(areas(image)[0])
    if found == wanted:
        return None
    first = ", ".join(str(tuple(int(v) for v in colour)) for colour in palette()[:max(wanted, 2)])
    return (f"region_mask has {found} region colours but the prompt has {wanted} regions; paint region n in "
            f"Regional Prompter's n-th colour (RGB {first}, ...)")
