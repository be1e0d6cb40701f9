"""The embedded `gridgen-tiny` model: a few-MB Stable Diffusion pipeline shipped inside the package.

It is trained on a procedural data set of colored shapes (`gridgen.tiny.data`), so `gridgen run`
shows real, checkable images on a CPU-only machine with no network, and the test suite uses it
as an oracle (`gridgen.tiny.evaluate`). `python -m gridgen.tiny.train` retrains the folder.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_NAME = "gridgen-tiny"
TINY_MODEL_DIR = Path(__file__).resolve().parent / TINY_MODEL_NAME

__all__ = ["TINY_MODEL_DIR", "TINY_MODEL_NAME"]
