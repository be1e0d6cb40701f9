"""Checks every generation mode's tests share: how many cells each base denoising batch held, and that cells
denoised in one batch (split over CPU shards) render as they do alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend


def count_denoised(monkeypatch) -> list[int]:
    """The size of every base denoising batch from now on."""
    batches: list[int] = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: batches.append(len(batch)) or
                        original(self, batch))
    return batches


def assert_one_batch_renders_as_alone(folder: Path, cells: list[Cell], monkeypatch) -> None:
    """`cells` share a batch key, go through one denoising batch on two CPU shards (so every per-sample input
    is sliced), and each matches its render alone within 1/255 at every pixel."""
    together_backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cpu_shards=2))
    assert len({together_backend.batch_key(dict(c.params)) for c in cells}) == 1
    batches = count_denoised(monkeypatch)
    together = {r.cell.key: _pixels(r.image) for r in together_backend.render(cells)}
    together_backend.close()
    assert batches == [len(cells)]
    alone_backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    for one in cells:
        (alone,) = alone_backend.render([one])
        assert np.abs(_pixels(alone.image) - together[one.key]).max() <= 1, one.key
    alone_backend.close()


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)
