"""The embedded `gridgen-tiny` model: a few-MB Stable Diffusion pipeline shipped inside the package.

The folder shipped today holds small seeded random weights, which prove the pipeline runs but draw
nothing. `python -m gridgen.tiny.train` trains the family on a procedural data set of colored
shapes (`gridgen.tiny.data`), and `python -m gridgen.tiny.evaluate` measures a folder against the
quality bars, so trained weights can replace it and serve as the test oracle.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_NAME = "gridgen-tiny"
TINY_MODEL_DIR = Path(__file__).resolve().parent / TINY_MODEL_NAME

__all__ = ["TINY_MODEL_DIR", "TINY_MODEL_NAME"]
