"""The embedded `gridgen-tiny` model: a 4 MB Stable Diffusion pipeline shipped inside the package.

Its weights are trained on a procedural data set of colored shapes (`gridgen.tiny.data`) by
`python -m gridgen.tiny.train`, so `gridgen run` shows real, checkable images on a CPU-only
machine with no network, and `python -m gridgen.tiny.evaluate` measures it against the quality
bars, which lets the test suite use it as an oracle.
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

__all__ = ["TINY_MODEL_DIR", "TINY_MODEL_NAME", "TINY_VARIANT_DIRS"]
