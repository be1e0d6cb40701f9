"""16-bit PNG files (an HDR merge's deep pixels) with the same text chunks as every other image gridgen writes.

Pillow has no 16-bit RGB mode, so OpenCV encodes the pixels; Pillow's `PngInfo` makes the `parameters` and
`gridgen` text chunks (tEXt, or iTXt for text beyond Latin-1, as for an 8-bit PNG) and pypng splices them in ahead of
the image data, where A1111's PNG Info and `metadata.read_metadata` look for them.
"""

from __future__ import annotations

import io
import json
from typing import Any

import cv2
import numpy as np
import png
from PIL import PngImagePlugin


def encode_png16(pixels: np.ndarray, parameters: str, record: dict[str, Any]) -> bytes:
    """The bytes of a PNG of `pixels` (height, width, 3 uint16 RGB) carrying both metadata blocks."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"16-bit PNG pixels must be (height, width, 3) uint16, got {pixels.shape} {pixels.dtype}")
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 4])
    if not ok:
        raise ValueError("OpenCV could not encode the 16-bit PNG")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("gridgen", json.dumps(record, sort_keys=True, ensure_ascii=True))
    text = [(chunk[0], chunk[1]) for chunk in info.chunks]
    chunks = list(png.Reader(bytes=encoded.tobytes()).chunks())
    first_data = next(index for index, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    out = io.BytesIO()
    png.write_chunks(out, chunks[:first_data] + text + chunks[first_data:])
    return out.getvalue()
