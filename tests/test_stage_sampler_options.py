"""A1111's sampler options reach the stages that denoise again under the cell's sampler: the SD x4 upscaler and the
SD inpainter of a SAM edit (which starts from an input image, so only the edit can show them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridgen.backends.sd.denoise import sampler_options
from gridgen.backends.sd.stages import upscale_stage, x4
from gridgen.backends.sd.stages.upscalers import parse_upscaler
from tests.test_sam import cell as sam_cell
from tests.test_sam import folder, known_sam  # noqa: F401 (fixtures)
from tests.test_upscalers import _test_image, model_files, x4_folder  # noqa: F401 (fixtures)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).max() > 2


@pytest.fixture(scope="module")
def x4_model(x4_folder):  # noqa: F811
    return x4.load_x4(x4_folder, torch.device("cpu"), torch.float32)


def upscale(model, **params) -> np.ndarray:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 5, "sampler": "Euler a", "schedule": "automatic",
            "noise_level": 30, "upscale_steps": 3, "upscale_cfg_scale": 6.0}
    return np.asarray(x4.x4_upscale(model, _test_image(24, 16), {**base, **params}), dtype=np.float64)


def test_x4_stage_reads_ensd_eta_and_variation_seeds(x4_model):
    plain = upscale(x4_model)
    assert differ(upscale(x4_model, eta_noise_seed_delta=31337), plain)
    assert np.array_equal(upscale(x4_model, sampler="Euler", eta_noise_seed_delta=31337),
                          upscale(x4_model, sampler="Euler"))
    assert np.array_equal(upscale(x4_model, eta=1.0), plain)
    assert differ(upscale(x4_model, eta=0.0), plain)
    assert np.array_equal(upscale(x4_model, var_seed=9, var_seed_strength=0.0), plain)
    assert differ(upscale(x4_model, var_seed=9, var_seed_strength=0.5), plain)


def test_stage_cache_keys_hold_the_options_the_stages_read():
    assert set(sampler_options.RECIPE_READS) <= set(upscale_stage.reads(parse_upscaler("sd-x4")))


def test_sam_inpainter_reads_ensd_and_eta(backend, known_sam):  # noqa: F811
    def edit(**params) -> np.ndarray:
        (result,) = backend.render([sam_cell(inpaint_mode="fill", inpainter="gridgen-tiny", sam_mask="0", dilate=3,
                                             denoise=1.0, **{"sampler": "Euler a", **params})])
        return np.asarray(result.image.convert("RGB"), dtype=np.float64)

    # One backend renders them all: each differs from the first only if its stage cache key holds the option.
    plain = edit()
    assert differ(edit(eta_noise_seed_delta=31337), plain)
    assert differ(edit(eta=0.0), plain)
    assert np.array_equal(edit(sampler="Euler", eta_noise_seed_delta=31337), edit(sampler="Euler"))
