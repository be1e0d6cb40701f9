"""Differential diffusion: a change map keeps its black pixels, redraws its white ones, is plain img2img when all
white, grades in between, and renders per cell in a batch, on txt2img and inpainting UNets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends.base import Cell
from gridgen.backends.sd.denoise.change_map import threshold
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_image_modes import build_inpaint_folder, picture, pixels, rectangle_mask

LEFT = np.s_[:, :16]  # 16 px clear of the map's edge at x = 32, beyond the tiny VAE's reach
RIGHT = np.s_[:, 48:]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("change-map")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    rectangle_mask((64, 64), (32, 0, 64, 64)).save(root / "right.png")
    Image.new("L", (64, 64), 255).save(root / "white.png")
    Image.new("L", (32, 32), 128).save(root / "grey.png")  # any size: stretched to the image's
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), "L").save(root / "ramp.png")
    rectangle_mask((64, 64), (16, 20, 40, 44)).save(root / "mask.png")
    build_inpaint_folder(root / "tiny-inpaint")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 6, "sampler": "Euler", "cfg_scale": 5.0, "mask_blur": 0,
            "init_image": "init.png", "denoise": 1.0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def render(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return pixels(result.image)


def test_thresholds_free_more_pixels_each_step_and_none_of_change_zero():
    bars = [threshold(index, 6) for index in range(6)]
    assert bars == sorted(bars, reverse=True) and bars[0] < 1 and bars[-1] == 0


@pytest.mark.parametrize("model", ["gridgen-tiny", "tiny-inpaint"])
def test_black_keeps_the_original_and_white_is_redrawn(backend, model, monkeypatch):
    from gridgen.backends.sd.denoise import change_map

    latents = []
    original = change_map.denoise
    monkeypatch.setattr(change_map, "denoise", lambda *args, **kwargs: latents.append(original(*args, **kwargs))
                        or latents[-1])
    round_trip = render(backend, model=model, denoise=0.0, change_map="right.png")  # nothing run: the VAE alone
    result = render(backend, model=model, change_map="right.png")
    kept, redrawn = latents
    # The latents under the map's black half are the original's, exactly; the white half's are new.
    assert torch.equal(redrawn[..., :4], kept[..., :4])
    assert (redrawn[..., 4:] - kept[..., 4:]).abs().mean() > 0.3
    # In pixels the decoder mixes neighbouring latents, so the black half is near the VAE's round trip and the
    # white half far from it.
    assert np.abs(result[LEFT] - round_trip[LEFT]).mean() < 0.5 * np.abs(result[RIGHT] - round_trip[RIGHT]).mean()


@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_an_all_white_map_is_plain_img2img(backend, denoise):
    plain = render(backend, denoise=denoise)
    assert np.abs(render(backend, denoise=denoise, change_map="white.png") - plain).max() <= 1


def test_grey_changes_less_than_white_and_a_ramp_changes_more_toward_white(backend):
    source = pixels(picture(64, 64))
    change = {name: np.abs(render(backend, change_map=f"{name}.png") - source).mean() for name in ("grey", "white")}
    assert change["grey"] < change["white"] - 5, change
    ramp = np.abs(render(backend, change_map="ramp.png") - source).mean(axis=(0, 2))
    assert ramp[:16].mean() < ramp[24:40].mean() < ramp[48:].mean(), ramp


def test_soft_mask_redraws_the_blurred_edge_and_keeps_the_rest(backend):
    source = pixels(picture(64, 64))
    hard = render(backend, mask="mask.png", mask_blur=4)
    soft = render(backend, mask="mask.png", mask_blur=4, soft_mask=True)
    outside = np.asarray(rectangle_mask((64, 64), (4, 8, 52, 56))) == 0  # beyond the blur's reach
    assert np.array_equal(soft[outside], source[outside])  # pasted back through the blurred mask, as inpaint is
    assert np.abs(soft - hard).max() > 5  # graded by the blurred mask, not binarized


@pytest.mark.parametrize("model", ["gridgen-tiny", "tiny-inpaint"])
def test_cells_with_their_own_maps_render_in_one_batch_as_alone(folder, monkeypatch, model):
    cells = [cell(key="a", model=model, change_map="right.png", seed=3, sampler="Euler a"),
             cell(key="b", model=model, change_map="ramp.png", init_image="other.png", sampler="Euler a"),
             cell(key="c", model=model, change_map="grey.png", seed=9, sampler="Euler a")]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


@pytest.mark.parametrize(("params", "words"), [
    ({"change_map": "right.png"}, ["init_image is not"]),
    ({"init_image": "init.png", "change_map": "right.png", "mask": "mask.png"}, ["give one"]),
    ({"init_image": "init.png", "change_map": "right.png", "inpaint_full_res": True}, ["inpaint_full_res"]),
    ({"init_image": "init.png", "change_map": "missing.png"}, ["missing.png", "no such file"]),
])
def test_change_map_problems_name_the_param(backend, params, words):
    problems = [p for p in backend.validate(params) if p.param == "change_map"]
    assert problems, backend.validate(params)
    for word in words:
        assert word in problems[0].message


def test_an_inpainting_model_takes_a_change_map_without_a_mask(backend):
    assert backend.validate({"model": "tiny-inpaint", "init_image": "init.png", "change_map": "ramp.png"}) == []
