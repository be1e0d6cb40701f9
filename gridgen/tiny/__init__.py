"""The embedded `gridgen-tiny` model family: few-MB models shipped inside the package.

`gridgen-tiny` is a Stable Diffusion 1.x txt2img folder; `-inpaint`, `-x4` and `-sam` are its
inpainting, x4 upscaler and Segment Anything companions. Their weights are trained on a procedural
data set of colored shapes (`gridgen.tiny.data`) by `python -m gridgen.tiny.train --variant NAME`,
so `gridgen run` shows real, checkable images on a CPU-only machine with no network, and
`python -m gridgen.tiny.evaluate` (txt2img) and `python -m gridgen.tiny.evaluate_variants` (the
others) measure them against the quality bars, which lets the test suite use them as an oracle.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_NAME = "gridgen-tiny"
TINY_MODEL_DIR = Path(__file__).resolve().parent / TINY_MODEL_NAME
# Each variant's folder; the names are what a spec's `model` (or `upscaler`) value says.
TINY_VARIANT_DIRS = {
    "txt2img": TINY_MODEL_DIR,
    "inpaint": TINY_MODEL_DIR.with_name(f"{TINY_MODEL_NAME}-inpaint"),
    "x4": TINY_MODEL_DIR.with_name(f"{TINY_MODEL_NAME}-x4"),
    "sam": TINY_MODEL_DIR.with_name(f"{TINY_MODEL_NAME}-sam"),
}



def tiny_folder(name: str) -> Path | None:
    """The shipped folder that a model name such as `gridgen-tiny-x4` stands for, or None."""
    return next((folder for folder in TINY_VARIANT_DIRS.values() if folder.name == name), None)


__all__ = ["TINY_MODEL_DIR", "TINY_MODEL_NAME", "TINY_VARIANT_DIRS", "tiny_folder"]
