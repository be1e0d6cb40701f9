"""Exposure fusion of a cell's brackets into one image, as the VectorscopeCC HDR script merges them.

OpenCV's Mertens fusion (`cv2.createMergeMertens`) weighs every pixel of every bracket by its contrast,
saturation and well-exposedness and blends them across a Laplacian pyramid, so highlights come from the darker
brackets and shadows from the brighter ones, with no exposure times or camera response needed. Its result, a float
image nominally 0 to 1, is clipped to that range as OpenCV's HDR tutorial does (the pyramid overshoots at hard
edges; the extension instead shifts the darkest value to black, which on such edges lifts the whole image into
clipping), raised to 1 / `gamma` (above 1 brightens the midtones) and quantised to 8 or 16 bits per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image


def fuse(brackets: Sequence[Image.Image], gamma: float) -> np.ndarray:
    """The fused float RGB image (height, width, 3) in 0 to 1, before quantising."""
    stack = [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in brackets]
    fused = cv2.createMergeMertens().process(stack)  # channel order does not matter to its weights
    return np.power(np.clip(fused, 0.0, 1.0), 1.0 / gamma)


def merge(brackets: Sequence[Image.Image], gamma: float, depth: int) -> tuple[Image.Image, np.ndarray | None]:
    """(the merged image in 8 bits, its 16-bit pixels when `depth` is 16, else None)."""
    fused = fuse(brackets, gamma)
    if depth == 16:
        deep = np.clip(np.rint(fused * 65535), 0, 65535).astype(np.uint16)
        # The 8-bit image is the 16-bit one rounded, so the preview and the file agree.
        return Image.fromarray(np.rint(deep / 257).astype(np.uint8), "RGB"), deep
    return Image.fromarray(np.clip(np.rint(fused * 255), 0, 255).astype(np.uint8), "RGB"), None
