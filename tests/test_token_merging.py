"""Token merging (ToMe) through tomesd on the installed diffusers: on gridgen-tiny's UNet (nothing to merge at full
resolution) and on a tiny SD-like UNet that attends at full resolution, as SD 1.x does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise import token_merging
from gridgen.metadata import a1111_parameters
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_sampler_options import cell as tiny_cell
from tests.tiny_models import tiny_parts


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with `attends`: gridgen-tiny's text encoder and VAE with a random UNet whose full-resolution
    blocks attend."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    root = tmp_path_factory.mktemp("tome")
    parts = tiny_parts(4)
    config = {**parts["unet"].config, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                            "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
    torch.manual_seed(1)
    parts["unet"] = UNet2DConditionModel.from_config(config)
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(root / "attends")
    return root


@pytest.fixture(scope="module")
def backend(folder):
    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    yield instance
    instance.close()


def cell(key: str = "0", **params):
    return tiny_cell(key, model="attends", **params)


def render(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return np.asarray(result.image.convert("RGB"), dtype=np.float64)


def _unet_outputs(unet, ratio: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 7, unet.config.cross_attention_dim, generator=generator)
    token_merging.use_ratio(unet, ratio)
    with torch.inference_mode():
        return unet(sample, torch.tensor(500), context).sample


def test_tomesd_patches_diffusers_unets(backend):
    from diffusers import UNet2DConditionModel

    from gridgen.tiny import TINY_MODEL_DIR

    tiny = UNet2DConditionModel.from_pretrained(TINY_MODEL_DIR / "unet").eval()
    off = _unet_outputs(tiny, 0.0)
    merged = _unet_outputs(tiny, 0.5)
    assert any(type(module).__name__ == "ToMeBlock" for module in tiny.modules())
    assert torch.equal(merged, off)  # gridgen-tiny attends only below full resolution: nothing to merge
    attends = UNet2DConditionModel.from_pretrained(backend.context.spec_dir / "attends" / "unet").eval()
    off = _unet_outputs(attends, 0.0)
    merged = _unet_outputs(attends, 0.5)
    assert not torch.equal(merged, off)
    assert torch.equal(_unet_outputs(attends, 0.0), off)  # the patch comes off again
    assert not any(type(module).__name__ == "ToMeBlock" for module in attends.modules())


def test_ratio_0_is_off_and_half_changes_the_image_but_keeps_it_close(backend):
    off = render(backend)
    assert np.array_equal(render(backend, token_merging_ratio=0.0), off)
    merged = render(backend, token_merging_ratio=0.5)
    other_seed = render(backend, seed=2)
    assert np.abs(merged - off).max() > 2
    assert np.abs(merged - off).mean() < 0.25 * np.abs(other_seed - off).mean()
    assert np.array_equal(render(backend), off)  # the next cell without ToMe renders on the unpatched UNet


def test_ratio_splits_batches_and_a_batch_renders_as_alone(backend, folder, monkeypatch):
    keys = {backend.batch_key(cell(**extra).params) for extra in
            [{}, {"token_merging_ratio": 0.0}, {"token_merging_ratio": 0.3}, {"token_merging_ratio": 0.5}]}
    assert len(keys) == 3
    cells = [cell("a", token_merging_ratio=0.5, sampler="Euler a"),
             cell("b", seed=3, token_merging_ratio=0.5, sampler="Euler a", eta=0.5)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


def test_png_parameters_carry_the_ratio():
    text = a1111_parameters({"prompt": "x", "seed": 1, "token_merging_ratio": 0.5})
    assert "Token merging ratio: 0.5" in text.splitlines()[-1]
    assert "Token merging" not in a1111_parameters({"prompt": "x", "seed": 1, "token_merging_ratio": 0.0})
