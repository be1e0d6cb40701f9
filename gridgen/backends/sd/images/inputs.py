"""The image files a cell names (`init_image`, `mask`, `depth_map`, `change_map`, `region_mask`): found relative to
the spec file, checked, read once.

`check` runs at validation, before any model loads: the file exists, decodes as an image, has a
usable size, and a mask matches its init image's size. Errors name the param and the file.
Images are kept per (path, modification time), and `fingerprint` hashes their bytes, so a stage
cache key changes when a file is edited in place.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from gridgen.backends.base import ParamProblem

IMAGE_PARAMS = ("init_image", "mask", "depth_map", "change_map", "region_mask")
# Read as one grey channel.
GREY_PARAMS = ("mask", "change_map")
MAX_SIDE = 8192


class ImageInputError(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@lru_cache(maxsize=64)
def _read(path: Path, mtime_ns: int) -> tuple[Image.Image, str]:
    with Image.open(path) as opened:
        if max(opened.size) > MAX_SIDE:  # refused before decoding: a forged header must not allocate gigabytes
            raise ValueError(f"it is {opened.width}x{opened.height}; images must be at most {MAX_SIDE} pixels a side")
        opened.load()
        image = opened.copy()
    return image, hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class ImageInputs:
    def __init__(self, spec_dir: Path):
        self.spec_dir = Path(spec_dir)

    def path(self, value: str) -> Path:
        return (self.spec_dir / Path(str(value)).expanduser()).resolve()

    def read(self, param: str, value: str) -> tuple[Image.Image, str]:
        """The image a param names and a hash of its bytes; raises ImageInputError naming the file."""
        path = self.path(value)
        try:
            return _read(path, path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise ImageInputError(param, f"{param} {value!r}: no such file ({path}); image paths are relative "
                                         f"to the spec file") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageInputError(param, f"{param} {value!r}: cannot decode {path} as an image ({exc}); "
                                         f"use a PNG, JPEG or WebP file") from None

    def load(self, param: str, value: str) -> Image.Image:
        image, _ = self.read(param, value)
        return image.convert("L" if param in GREY_PARAMS else "RGB")

    def size(self, value: str) -> tuple[int, int] | None:
        """The init image's size, or None when it cannot be read (validation reports that)."""
        try:
            return self.read("init_image", value)[0].size
        except ImageInputError:
            return None

    def check(self, params: dict[str, Any]) -> list[ParamProblem]:
        problems, sizes = [], {}
        for param in IMAGE_PARAMS:
            if params.get(param):
                try:
                    sizes[param] = self.read(param, params[param])[0].size
                except ImageInputError as exc:
                    problems.append(ParamProblem(param, str(exc)))
        for param, (width, height) in sizes.items():
            if min(width, height) < 8 or max(width, height) > MAX_SIDE:
                problems.append(ParamProblem(param, f"{param} {params[param]!r} is {width}x{height}; images must be "
                                                    f"8 to {MAX_SIDE} pixels a side"))
        if "mask" in sizes and "init_image" in sizes and sizes["mask"] != sizes["init_image"]:
            problems.append(ParamProblem("mask", "mask {!r} is {}x{} but init_image {!r} is {}x{}; a mask must be "
                                                 "the size of its init image".format(
                                                     params["mask"], *sizes["mask"], params["init_image"],
                                                     *sizes["init_image"])))
        return problems

    def fingerprint(self, params: dict[str, Any]) -> str:
        """Hashes of the files the params name, for stage cache keys ('' when there are none)."""
        hashes = []
        for param in IMAGE_PARAMS:
            if params.get(param):
                try:
                    hashes.append(self.read(param, params[param])[1])
                except ImageInputError:
                    hashes.append("unreadable")
        return ",".join(hashes)
