"""Outpainting's canvas: the init image extended by pixels per side, the new area filled, and what to redraw.

`outpaint: left 64, right 64` (or `outpaint_left` ... `outpaint_down`, which win over it) names the sides.
The new area is first filled from the image (`outpaint_fill`: OpenCV's Telea, or the edge pixels stretched
outward) so the model starts from colours that continue the picture, then redrawn by one of two methods:

- `gradient`: differential diffusion under a change map that is 0 on the original, ramps to 1 over
  `outpaint_feather` pixels past the old border and is 1 beyond, so the redrawn part grows out of the fill
  with no seam; the result is pasted back through the same map, so the original stays exact.
- `poor_man`: A1111's "poor man's outpainting": an ordinary inpaint of the new area with a hard mask
  (softened by `mask_blur`), the baseline the gradient method is compared with.

Parsing and sizes need no image, so validation and planning use them; the canvas itself is built from PIL images.
"""

from __future__ import annotations

import re
from typing import Any

from PIL import Image

SIDES = ("left", "right", "up", "down")
FILLS = ("opencv-telea", "edge")
METHODS = ("gradient", "poor_man")
MAX_EXTENT = 4096
_SIDE = re.compile(r"^(left|right|up|down|top|bottom)\s*[:=]?\s*(\d+)(?:\s*px)?$")
_SYNONYMS = {"top": "up", "bottom": "down"}


def parse(raw: Any) -> dict[str, int]:
    """`left 64, right 64` as {side: pixels}; raises ValueError saying the form when it does not read."""
    extents: dict[str, int] = {}
    for part in filter(None, (item.strip() for item in str(raw).lower().split(","))):
        found = _SIDE.match(part)
        if not found:
            raise ValueError(f"outpaint part {part!r} does not read; write sides and pixels like "
                             f"`left 64, right 64` (sides: left, right, up, down)")
        side, pixels = _SYNONYMS.get(found[1], found[1]), int(found[2])
        if pixels > MAX_EXTENT:
            raise ValueError(f"outpaint {side} {pixels} is over {MAX_EXTENT} px")
        extents[side] = extents.get(side, 0) + pixels
    return extents


def canonical(raw: Any) -> str:
    """The `outpaint` value written one way (sides in a fixed order), so equal specs give equal cells."""
    extents = parse(raw)
    return ", ".join(f"{side} {extents[side]}" for side in SIDES if extents.get(side))


def extents(params: dict[str, Any]) -> dict[str, int]:
    """Pixels added per side: `outpaint_<side>` where set, else what `outpaint` says."""
    given = parse(params.get("outpaint") or "")
    for side in SIDES:
        if params.get(f"outpaint_{side}") is not None:
            given[side] = int(params[f"outpaint_{side}"])
    return {side: given.get(side, 0) for side in SIDES}


def active(params: dict[str, Any]) -> bool:
    return bool(params.get("init_image")) and any(extents(params).values())


def method(params: dict[str, Any]) -> str:
    return str(params.get("outpaint_method") or METHODS[0])


def extended_size(size: tuple[int, int], params: dict[str, Any]) -> tuple[int, int]:
    """The canvas size of an image of `size` once extended."""
    sides = extents(params)
    return size[0] + sides["left"] + sides["right"], size[1] + sides["up"] + sides["down"]


def canvas(image: Image.Image, params: dict[str, Any]) -> tuple[Image.Image, Image.Image]:
    """The extended, filled canvas and the mask of what to redraw: the gradient change map or the hard mask of
    the new area, by the cell's `outpaint_method`."""
    import numpy as np

    sides = extents(params)
    pixels = np.asarray(image.convert("RGB"))
    pad = ((sides["up"], sides["down"]), (sides["left"], sides["right"]), (0, 0))
    stretched = np.pad(pixels, pad, mode="edge")
    new_area = np.pad(np.zeros(pixels.shape[:2], dtype=np.uint8), pad[:2], constant_values=255)
    filled = Image.fromarray(stretched, "RGB")
    if str(params.get("outpaint_fill") or FILLS[0]) == "opencv-telea":
        from gridgen.backends.sd.images.inpainters import telea

        filled = telea(filled, Image.fromarray(new_area, "L"))
    if method(params) == "poor_man":
        return filled, Image.fromarray(new_area, "L")
    return filled, _gradient(pixels.shape[1], pixels.shape[0], sides, int(params.get("outpaint_feather") or 1))


def _gradient(width: int, height: int, sides: dict[str, int], feather: int) -> Image.Image:
    """0 over the original, rising linearly to 1 over `feather` px past each extended border, 1 beyond."""
    import numpy as np

    rows = np.arange(sides["up"] + height + sides["down"], dtype=np.float32)[:, None]
    columns = np.arange(sides["left"] + width + sides["right"], dtype=np.float32)[None, :]
    # Distance past the old border on each side (0 inside), only for the sides that were extended.
    past = [(sides["left"] - columns) * (sides["left"] > 0), (columns - (sides["left"] + width - 1)) *
            (sides["right"] > 0), (sides["up"] - rows) * (sides["up"] > 0),
            (rows - (sides["up"] + height - 1)) * (sides["down"] > 0)]
    distance = np.maximum.reduce([np.broadcast_to(np.clip(d, 0, None), (rows.size, columns.size)) for d in past])
    change = np.clip(distance / max(1, feather), 0, 1)
    return Image.fromarray((change * 255).round().astype(np.uint8), "L")


def problems(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, message) for outpaint params that do not fit the cell."""
    if not any(extents(params).values()):
        return []
    if not params.get("init_image"):
        return [("outpaint", "outpaint extends init_image, which is not set; give the image to extend")]
    if params.get("mask") or params.get("change_map"):
        return [("outpaint", "outpaint makes its own mask of the new area; drop mask and change_map")]
    if params.get("inpaint_full_res") or params.get("padding_mask_crop") is not None:
        return [("outpaint", "outpaint redraws the whole extended canvas; drop inpaint_full_res and "
                             "padding_mask_crop")]
    return []
