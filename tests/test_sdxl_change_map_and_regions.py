"""Differential diffusion and regional prompting on SDXL (4- and 9-channel tiny models): the added conditioning
(pooled text, sizes) follows the change-map hook and the widened region rows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.test_image_modes import picture, pixels
from tests.test_sdxl_modes import backend, cell, folder, render  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def maps(folder):  # noqa: F811
    Image.new("L", (64, 64), 255).save(folder / "white.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), "L").save(folder / "ramp.png")
    return folder


@pytest.mark.parametrize("model", ["xl", "xl-inpaint"])
def test_sdxl_change_map_grades_the_redraw(backend, maps, model):  # noqa: F811
    source = pixels(picture(64, 64))
    ramp = np.abs(render(backend, model=model, init_image="init.png", denoise=1.0, change_map="ramp.png") - source)
    columns = ramp.mean(axis=(0, 2))
    assert columns[:16].mean() < columns[48:].mean(), columns


def test_sdxl_all_white_change_map_is_plain_img2img(backend, maps):  # noqa: F811
    plain = render(backend, init_image="init.png", denoise=0.8)
    assert np.abs(render(backend, init_image="init.png", denoise=0.8, change_map="white.png") - plain).max() <= 1


@pytest.mark.parametrize("calc", ["latent", "attention"])
def test_sdxl_regions_of_one_prompt_are_that_prompt(backend, calc):  # noqa: F811
    plain = render(backend, prompt="a red cat")
    assert np.abs(render(backend, prompt="a red cat BREAK a red cat", regions="Columns", region_calc=calc)
                  - plain).max() <= 1
    # The right region's own prompt changes the right half more than the left, which keeps the plain prompt.
    changed = np.abs(render(backend, prompt="a red cat BREAK a blue dog", regions="Columns", region_calc=calc)
                     - plain)
    half = changed.shape[1] // 2
    assert changed[:, half:].mean() > changed[:, :half].mean(), (changed[:, :half].mean(), changed[:, half:].mean())


def test_sdxl_regional_cells_render_alike_alone_and_in_one_batch(backend):  # noqa: F811
    cells = [cell("a", prompt="a red cat BREAK a blue dog", regions="Columns", seed=2),
             cell("b", prompt="a cat ADDBASE a dog BREAK a bird", regions="Rows", base_ratio=0.4, seed=3),
             cell("c", prompt="a red cat", seed=4),
             cell("d", prompt="a cat ADDBASE a dog BREAK a bird", regions="Rows", base_ratio=0.4, seed=3,
                  region_calc="attention")]
    together = {result.cell.key: pixels(result.image) for result in backend.render(cells)}
    for one in cells:
        (alone,) = backend.render([one])
        assert np.abs(pixels(alone.image) - together[one.key]).max() <= 1, one.params
