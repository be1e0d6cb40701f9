"""Regional prompting (Regional Prompter's matrix mode, latent calculation; the default calculation, attention, is
tested in test_regions_attention_and_mask.py): layouts and prompts read as the
extension reads them, each region drawing its own prompt where its box is, and cells of a batch keeping their
own layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridgen.backends.base import Cell
from gridgen.backends.sd.text import regions
from gridgen.params import Registry
from gridgen.tiny import evaluate as ev
from tests.batch_checks import assert_one_batch_renders_as_alone

CIRCLE, SQUARE = "a red circle on a white background", "a red square on a white background"
RED, BLUE = "a red circle on a white background", "a blue square on a white background"
SEEDS = range(1, 11)
BAR = 0.8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("regions")


def cell(key: str = "0", **params) -> Cell:
    base = {**Registry().defaults(), "steps": 20, "sampler": "DPM++ 2M", "cfg_scale": 7.0, "seed": 1,
            "width": 128, "height": 64, "regions": "Columns", "region_calc": "latent"}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def halves(backend, prompt: str, seeds: range = SEEDS, **params) -> list[tuple[ev.Reading, ev.Reading]]:
    """The classifier's reading of each half, one pair per seed."""
    results = backend.render([cell(str(seed), prompt=prompt, seed=seed, **params) for seed in seeds])
    found = []
    for result in results:
        image = np.asarray(result.image.convert("RGB"))
        found.append((ev.classify(image[:, :64]), ev.classify(image[:, 64:])))
    return found


def test_layouts_and_prompts_read_as_regional_prompter_reads_them():
    assert regions.canonical("columns") == "Columns" and regions.canonical("OFF") == regions.OFF
    assert regions.canonical("1, 2,1") == "1,2,1"
    with pytest.raises(ValueError, match="ratio string"):
        regions.canonical("left half")
    assert regions.boxes("1,2,1", 3) == [(0.0, 0.0, 0.25, 1.0), (0.25, 0.0, 0.75, 1.0), (0.75, 0.0, 1.0, 1.0)]
    assert regions.boxes("2,1,1;3,1", 3) == [(0.0, 0.0, 0.5, 0.4), (0.5, 0.0, 1.0, 0.4), (0.0, 0.4, 1.0, 1.0)]
    assert regions.boxes("Rows", 2) == [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)]
    split = regions.split_prompt("photo ADDCOMM a room ADDBASE a cat ADDCOL a dog BREAK a bird")
    assert split.regions == ("photo a cat", "photo a dog", "photo a bird") and split.base == "photo a room"
    assert regions.split_prompt("a BREAK b").base is None


def test_a_layout_with_another_number_of_regions_than_the_prompt_is_a_problem(backend):
    problems = [p for p in backend.validate({"prompt": "a BREAK b", "regions": "1,1,1"}) if p.param == "regions"]
    assert problems and "3 regions" in problems[0].message and "2" in problems[0].message
    assert [p for p in backend.validate({"prompt": "a BREAK b", "regions": "Columns"}) if p.param == "regions"] == []


def test_each_region_draws_its_own_shape_in_its_half_and_swapping_prompts_swaps_halves(backend):
    for prompt, wanted in ((f"{CIRCLE} BREAK {SQUARE}", ("circle", "square")),
                           (f"{SQUARE} BREAK {CIRCLE}", ("square", "circle"))):
        readings = halves(backend, prompt)
        right = sum((left.shape == wanted[0]) + (other.shape == wanted[1]) for left, other in readings)
        assert right / (2 * len(readings)) >= BAR, [(a.shape, b.shape) for a, b in readings]


@pytest.mark.xfail(strict=True, reason="gridgen-tiny was trained on one colour per image: in latent calculation "
                   "each region's prediction covers the whole canvas, and the one conditioned on red, seeing a blue "
                   "shape in the other half, stops drawing red in its own (green there in 8 of seeds 1-10, while "
                   "the blue half is right in 8): 45-53% right at CFG 5-10, worse with a base prompt "
                   "(bench/region_colours.py). Attention calculation, the default, passes this bar "
                   "(test_regions_attention_and_mask.py)")
def test_each_region_draws_its_own_colour_in_its_half(backend):
    readings = halves(backend, f"{RED} BREAK {BLUE}")
    right = sum((left.color == "red") + (other.color == "blue") for left, other in readings)
    assert right / (2 * len(readings)) >= BAR


def test_regions_of_one_prompt_are_that_prompt_and_base_ratio_1_is_the_base_alone(backend):
    def pixels(**params):
        (result,) = backend.render([cell(**params)])
        return np.asarray(result.image.convert("RGB"), dtype=np.float32)

    plain = pixels(prompt=CIRCLE, regions="off")
    assert np.abs(pixels(prompt=f"{CIRCLE} BREAK {CIRCLE}") - plain).max() <= 1
    based = pixels(prompt=f"{CIRCLE} ADDBASE {SQUARE} BREAK {RED}", base_ratio=1.0)
    assert np.abs(based - plain).max() <= 1
    assert np.abs(pixels(prompt=f"{CIRCLE} ADDBASE {SQUARE} BREAK {RED}", base_ratio=0.5) - plain).mean() > 2


def test_regional_and_plain_cells_render_in_one_batch_as_alone(folder, monkeypatch):
    cells = [cell("a", prompt=f"{CIRCLE} BREAK {SQUARE}", steps=4, sampler="Euler a"),
             cell("b", prompt=f"{SQUARE} ADDBASE {CIRCLE} ADDROW {SQUARE}", regions="Rows", base_ratio=0.3, steps=4,
                  sampler="Euler a", seed=5),
             cell("c", prompt=CIRCLE, regions="off", steps=4, sampler="Euler a", seed=2)]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)


def test_regional_cells_beside_cells_with_an_adjusted_prediction_render_as_alone(folder, monkeypatch):
    # CFG rescale acts per guidance row and a regional cell has one per region: the backend denoises the two apart.
    cells = [cell("a", prompt=f"{CIRCLE} BREAK {SQUARE}", steps=4, sampler="Euler a"),
             cell("b", prompt=CIRCLE, regions="off", cfg_rescale=0.7, steps=4, sampler="Euler a", seed=2)]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)


def test_regions_with_tiled_diffusion_are_refused_before_anything_renders(backend):
    problems = [p for p in backend.validate({**cell(prompt=f"{CIRCLE} BREAK {SQUARE}", tile_diffusion=True).params})
                if p.severity == "error"]
    assert [p.param for p in problems] == ["regions"] and "turn tile_diffusion off" in problems[0].message


def test_an_adjusted_prediction_on_a_regional_cell_is_refused(backend):
    problems = backend.validate({**Registry().defaults(), "prompt": f"{CIRCLE} BREAK {SQUARE}", "regions": "Columns",
                                 "cfg_rescale": 0.7, "width": 128, "height": 64})
    assert [p.param for p in problems if p.severity == "error"] == ["regions"]

