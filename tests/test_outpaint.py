"""Outpainting: the sides parse, the canvas grows, the original stays exact, the gradient method leaves no seam at
the old border (where the hard-mask baseline does), and cells of a batch keep their own sides."""

from __future__ import annotations

import numpy as np
import pytest

from gridgen.backends.base import Cell
from gridgen.backends.sd.images import outpaint
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_image_modes import picture, pixels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("outpaint")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 8, "sampler": "Euler", "cfg_scale": 5.0, "mask_blur": 4,
            "init_image": "init.png", "denoise": 1.0, "outpaint": "left 32, right 32"}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def column_steps(image: np.ndarray) -> np.ndarray:
    """The mean absolute change between each pair of neighbouring columns."""
    return np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))


def test_sides_parse_in_any_order_and_side_params_win():
    assert outpaint.canonical("Right 64, left 32px, top: 8") == "left 32, right 64, up 8"
    assert outpaint.extents({"outpaint": "left 32", "outpaint_left": 16, "outpaint_down": 8}) == {
        "left": 16, "right": 0, "up": 0, "down": 8}
    with pytest.raises(ValueError, match="left 64, right 64"):
        outpaint.parse("sideways 10")


def test_the_gradient_is_zero_on_the_original_and_one_past_the_feather():
    change = np.asarray(outpaint._gradient(64, 64, {"left": 32, "right": 0, "up": 0, "down": 16}, 8)) / 255
    assert change.shape == (80, 96)
    assert change[:64, 32:].max() == 0  # the original
    assert change[:, :24].min() == 1 and change[72:, :].min() == 1  # beyond the feather
    assert 0 < change[10, 28] < 1  # the ramp


@pytest.mark.parametrize("fill", ["opencv-telea", "edge"])
@pytest.mark.parametrize("seed", [1, 2])
def test_gradient_outpaint_keeps_the_original_and_leaves_no_seam(backend, fill, seed):
    (result,) = backend.render([cell(outpaint_fill=fill, seed=seed)])
    image = pixels(result.image)
    assert result.image.size == (128, 64)
    assert np.array_equal(image[:, 32:96], pixels(picture(64, 64)))
    steps = column_steps(image)
    assert max(steps[31], steps[95]) <= np.percentile(steps, 90), (steps[31], steps[95])
    assert np.abs(image[:, :16] - image[:, 32:33]).mean() > 5  # the new area is drawn, not the fill alone


def test_the_poor_mans_baseline_shows_the_seam_the_check_looks_for(backend):
    (result,) = backend.render([cell(outpaint_method="poor_man")])
    steps = column_steps(pixels(result.image))
    assert max(steps[31], steps[95]) > np.percentile(steps, 90)


def test_up_and_down_grow_the_canvas_at_the_init_images_size(backend):
    (result,) = backend.render([cell(outpaint=None, outpaint_up=16, outpaint_down=8, steps=2)])
    assert result.image.size == (64, 88)
    assert np.array_equal(pixels(result.image)[16:80], pixels(picture(64, 64)))


def test_cells_with_their_own_sides_render_in_one_batch_as_alone(folder, monkeypatch):
    cells = [cell(key="a", outpaint="left 16, right 16", sampler="Euler a", width=96, height=64),
             cell(key="b", outpaint="up 32", init_image="other.png", sampler="Euler a", width=96, height=64, seed=4)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


@pytest.mark.parametrize(("params", "words"), [
    ({"outpaint": "left 32"}, ["init_image"]),
    ({"outpaint": "left 32", "init_image": "init.png", "mask": "init.png"}, ["drop mask"]),
    ({"outpaint": "left 32", "init_image": "init.png", "inpaint_full_res": True}, ["inpaint_full_res"]),
])
def test_outpaint_problems_name_the_param(backend, params, words):
    problems = [p for p in backend.validate(params) if p.param == "outpaint"]
    assert problems, backend.validate(params)
    for word in words:
        assert word in problems[0].message
