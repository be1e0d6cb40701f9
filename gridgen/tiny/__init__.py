"""The embedded `gridgen-tiny` model: a few-MB Stable Diffusion pipeline shipped inside the package.

It lets `gridgen run` and the test suite render real pipelines on a CPU-only machine with no
network. `gridgen.tiny.build` regenerates the folder.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_NAME = "gridgen-tiny"
TINY_MODEL_DIR = Path(__file__).resolve().parent / TINY_MODEL_NAME

__all__ = ["TINY_MODEL_DIR", "TINY_MODEL_NAME"]
