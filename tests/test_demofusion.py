"""DemoFusion as the `demofusion` upscaler on gridgen-tiny: its phases, its patch batching, and the repeated-object
failure of generating straight at 4x the native size, which it avoids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.stages import demofusion
from gridgen.backends.sd.stages.upscalers import parse_upscaler
from gridgen.params import Registry

PROMPT = "a red circle on a white background"
BASE = {"prompt": PROMPT, "steps": 6, "sampler": "Euler"}


@pytest.fixture(scope="module")
def backend():
    instance = DiffusersBackend(BackendContext(spec_dir=".", device="cpu"))
    yield instance
    instance.close()


def _render(backend, **params) -> Image.Image:
    (result,) = backend.render([Cell(index=0, key="0", coords=("0",), params={**BASE, **params})])
    return result.image.convert("RGB")


def _phases(backend, base: Image.Image, scale: int, **params) -> dict[int, Image.Image]:
    """Every phase DemoFusion computes from `base` up to `scale` times its size."""
    cell = {**Registry().defaults(), **BASE, "seed": 1, **params}
    parts, prompts, _ = backend._loaded_model(cell)
    kept: dict[int, Image.Image] = {1: base}

    def keep(phase, compute):
        kept[phase] = compute()
        return kept[phase]

    demofusion.upscale(parts, prompts, base, (base.width * scale, base.height * scale), cell, keep)
    return kept


def test_demofusion_is_an_upscaler_value():
    assert parse_upscaler("DemoFusion").family == "demofusion"
    assert demofusion.phase_count((64, 64), (256, 256)) == 4
    assert demofusion.phase_count((64, 64), (150, 150)) == 3


def _low(image: Image.Image, size: int = 16) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def test_each_phase_keeps_the_previous_phases_low_frequencies(backend):
    base = _render(backend, seed=1)
    other = _render(backend, seed=2)
    phases = _phases(backend, base, 3)
    assert sorted(phases) == [1, 2, 3] and phases[1] is base  # phase 1 is the plain native render itself
    assert phases[3].size == (192, 192)
    unrelated = np.abs(_low(base) - _low(other)).mean()
    for phase in (2, 3):
        drift = np.abs(_low(phases[phase]) - _low(phases[phase - 1])).mean()
        assert drift < 0.35 * unrelated, (phase, drift, unrelated)


def test_patch_batch_split_differently_gives_the_same_image(backend):
    base = _render(backend, seed=1)
    one = np.asarray(_phases(backend, base, 2, view_batch_size=1)[2], dtype=np.int16)
    many = np.asarray(_phases(backend, base, 2, view_batch_size=16)[2], dtype=np.int16)
    assert np.abs(one - many).max() <= 2


def _objects(image: Image.Image) -> int:
    """Connected red regions of at least 0.2% of the image: the circles the prompt asks for."""
    pixels = np.asarray(image, dtype=np.int16)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    labels, count = ndimage.label(red)
    sizes = ndimage.sum(red, labels, range(1, count + 1))
    return int((np.asarray(sizes) >= red.size * 0.002).sum())


def test_demofusion_draws_one_object_where_txt2img_at_4x_repeats_it(backend):
    plain, fused = [], []
    for seed in (1, 2, 3):
        plain.append(_objects(_render(backend, seed=seed, width=256, height=256)))
        fused.append(_objects(_render(backend, seed=seed, upscaler="demofusion", upscale_by=4)))
    assert sum(count == 1 for count in fused) >= 2, fused
    assert np.mean(fused) < np.mean(plain), (fused, plain)


def test_a_grid_over_demofusion_scale_renders_the_base_and_each_phase_once(monkeypatch):
    backend = DiffusersBackend(BackendContext(spec_dir=".", device="cpu"))
    try:
        denoised: list[int] = []  # cells per base denoising pass
        original = backend._denoise
        monkeypatch.setattr(backend, "_denoise", lambda batch: denoised.append(len(batch)) or original(batch))
        scales = (2, 3, 4)
        cells = [Cell(index=i, key=str(s), coords=(str(s),), params={**BASE, "seed": 4, "demofusion_scale": s})
                 for i, s in enumerate(scales)]
        images = {s: result.image for s, result in zip(scales, backend.render(cells), strict=True)}
        assert {s: image.size for s, image in images.items()} == {2: (128, 128), 3: (192, 192), 4: (256, 256)}
        assert sum(denoised) == 1  # phase 1, the native txt2img render, once for the three cells
        # Phases 2, 3 and 4 once each; without the phase cache it would be 1 + 2 + 3.
        assert backend.upscaling.phases_rendered == 3
        assert "demofusion: 3 phases rendered" in backend.stats()
        # `upscaler: demofusion` reaches the same phases from the same base image: nothing more is rendered.
        (same,) = backend.render([Cell(index=3, key="u", coords=("u",),
                                       params={**BASE, "seed": 4, "upscaler": "demofusion", "upscale_by": 3})])
        assert backend.upscaling.phases_rendered == 3 and sum(denoised) == 1
        assert np.array_equal(np.asarray(same.image), np.asarray(images[3]))
    finally:
        backend.close()


def test_demofusion_scale_1_is_the_plain_native_render(backend):
    plain = np.asarray(_render(backend, seed=6))
    assert np.array_equal(np.asarray(_render(backend, seed=6, demofusion_scale=1)), plain)


def test_demofusion_scale_wins_over_the_upscale_params_and_refuses_other_upscalers(backend):
    assert not backend.validate({"demofusion_scale": 3, "upscaler": "demofusion", "upscale_by": 2})
    (problem,) = backend.validate({"demofusion_scale": 3, "upscaler": "lanczos"})
    assert problem.param == "demofusion_scale" and "lanczos" in problem.message
    assert _render(backend, seed=6, demofusion_scale=2, upscaler="demofusion", upscale_by=4).size == (128, 128)
