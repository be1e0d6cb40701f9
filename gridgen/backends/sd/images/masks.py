"""Pure operations on masks (mode "L" PIL images, white = the part to redraw): blur, dilation, crop regions, paste back.

Shared by the inpaint mode and the SAM edit. None of it touches a model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

Box = tuple[int, int, int, int]


def binary(mask: Image.Image) -> Image.Image:
    """White where the mask is at least half on, black elsewhere."""
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def blur(mask: Image.Image, radius: int) -> Image.Image:
    """The mask with its edge softened by a Gaussian of `radius` px, so the paste back has no seam."""
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius else mask


def dilate(mask: Image.Image, radius: int) -> Image.Image:
    """The mask grown by `radius` px in every direction (a disk, so a point becomes a circle of that radius)."""
    if radius <= 0:
        return mask
    import cv2

    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return Image.fromarray(cv2.dilate(np.asarray(binary(mask)), disk), "L")


def _grow(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """[lo, hi) widened to `length` (at most `limit`) around its middle, shifted back inside [0, limit)."""
    length = min(length, limit)
    lo -= (length - (hi - lo)) // 2
    lo = min(max(lo, 0), limit - length)
    return lo, lo + length


def crop_region(mask: Image.Image, padding: int, aspect: float) -> Box:
    """The box around the mask's white pixels plus `padding`, widened to the `aspect` (w/h) the model draws at.

    Matching the aspect means the crop is scaled, never stretched, on its way to the model and back.
    """
    width, height = mask.size
    found = binary(mask).getbbox()
    x1, y1, x2, y2 = found if found else (0, 0, width, height)
    x1, y1 = max(0, x1 - padding), max(0, y1 - padding)
    x2, y2 = min(width, x2 + padding), min(height, y2 + padding)
    if (x2 - x1) / (y2 - y1) < aspect:
        x1, x2 = _grow(x1, x2, round((y2 - y1) * aspect), width)
    else:
        y1, y2 = _grow(y1, y2, round((x2 - x1) / aspect), height)
    return x1, y1, x2, y2


def paste_back(original: Image.Image, redrawn: Image.Image, mask: Image.Image) -> Image.Image:
    """`redrawn` where the mask is white, `original` where it is black, blended in between."""
    return Image.composite(redrawn.convert("RGB"), original.convert("RGB"), mask.convert("L"))


OBJECT_TINT = (0, 160, 255)  # the mask shown over the input
POINT_COLORS = {1: (0, 220, 0), 0: (230, 0, 0)}  # object points green, background points red
BOX_COLOR = (255, 200, 0)


def overlay(image: Image.Image, mask: Image.Image, points: tuple = (), labels: tuple = (),
            box: tuple | None = None) -> Image.Image:
    """The input with the mask tinted over it and the prompt's points (a cross each) and box drawn on top."""
    from PIL import ImageDraw

    tinted = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, OBJECT_TINT), 0.45)
    shown = Image.composite(tinted, image.convert("RGB"), mask.convert("L"))
    draw = ImageDraw.Draw(shown)
    arm = max(2, min(image.size) // 40)
    for (x, y), label in zip(points, labels, strict=True):
        color = POINT_COLORS[label]
        draw.line([(x - arm, y), (x + arm, y)], fill=color)
        draw.line([(x, y - arm), (x, y + arm)], fill=color)
    if box is not None:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=BOX_COLOR)
    return shown
