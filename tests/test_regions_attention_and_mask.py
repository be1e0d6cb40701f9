"""Regional prompting's attention calculation (cross-attention split by region inside the UNet) and mask mode
(regions named by the colours of a `region_mask` image), on gridgen-tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gridgen.backends.sd.images import region_masks
from gridgen.backends.sd.text import regions
from gridgen.params import Registry
from gridgen.viewer.specs import path_problem
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_regions import BLUE, CIRCLE, RED, SQUARE, cell, halves

BAR = 0.8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    found = tmp_path_factory.mktemp("regions_attention")
    first, second = (tuple(int(v) for v in colour) for colour in region_masks.palette()[:2])
    halves_mask = np.zeros((64, 128, 3), dtype=np.uint8)
    halves_mask[:, :64], halves_mask[:, 64:] = first, second
    Image.fromarray(halves_mask).save(found / "halves.png")
    Image.fromarray(halves_mask[:, ::-1].copy()).save(found / "swapped.png")
    # Region 0 only on the left quarter, region 1 on the right half: the rest is unpainted (white).
    partial = np.full((64, 128, 3), 255, dtype=np.uint8)
    partial[:, :32], partial[:, 64:] = first, second
    Image.fromarray(partial).save(found / "partial.png")
    Image.fromarray(np.full((32, 32, 3), first, dtype=np.uint8)).save(found / "one.png")
    return found


def pixels(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return np.asarray(result.image.convert("RGB"), dtype=np.float32)


@pytest.mark.xfail(strict=True, reason="on gridgen-tiny a shape is drawn by the whole network (self-attention and "
                   "convolutions see both halves); only the text attended to is split by region, so 70% of halves "
                   "(seeds 1-10) get their own shape, where latent calculation, one prediction per region, gets 80%")
def test_attention_calc_draws_each_region_shape_in_its_half_and_swapping_prompts_swaps_halves(backend):
    for prompt, wanted in ((f"{CIRCLE} BREAK {SQUARE}", ("circle", "square")),
                           (f"{SQUARE} BREAK {CIRCLE}", ("square", "circle"))):
        readings = halves(backend, prompt, region_calc="attention")
        right = sum((left.shape == wanted[0]) + (other.shape == wanted[1]) for left, other in readings)
        assert right / (2 * len(readings)) >= BAR, [(a.shape, b.shape) for a, b in readings]


def test_the_default_calc_is_attention_and_draws_each_region_colour_in_its_half_either_way_round(backend):
    default = Registry().defaults()["region_calc"]
    assert default == "attention"  # as in Regional Prompter
    for prompt, wanted in ((f"{RED} BREAK {BLUE}", ("red", "blue")), (f"{BLUE} BREAK {RED}", ("blue", "red"))):
        readings = halves(backend, prompt, seeds=range(1, 21), region_calc=default)
        right = sum((left.color == wanted[0]) + (other.color == wanted[1]) for left, other in readings)
        assert right / (2 * len(readings)) >= BAR, [(a.color, b.color) for a, b in readings]


def test_attention_calc_with_base_ratio_1_is_the_base_prompt_alone_and_differs_from_latent(backend):
    plain = pixels(backend, prompt=CIRCLE, regions="off")
    based = pixels(backend, prompt=f"{CIRCLE} ADDBASE {SQUARE} BREAK {RED}", base_ratio=1.0, region_calc="attention")
    assert np.abs(based - plain).max() <= 1
    one_prompt = pixels(backend, prompt=f"{CIRCLE} BREAK {CIRCLE}", region_calc="attention")
    assert np.abs(one_prompt - plain).max() <= 1
    two = f"{CIRCLE} BREAK {SQUARE}"
    assert np.abs(pixels(backend, prompt=two, region_calc="attention") - pixels(backend, prompt=two)).mean() > 2


def test_attention_calc_puts_the_models_own_processors_back(backend):
    (result,) = backend.render([cell(prompt=f"{CIRCLE} BREAK {SQUARE}", region_calc="attention", steps=2)])
    assert result.image.size == (128, 64)
    processors = backend._components.unet.attn_processors
    assert processors and not any(type(p).__name__ == "RegionalAttention" for p in processors.values())


def test_attention_latent_and_plain_cells_render_in_one_batch_as_alone(folder, monkeypatch):
    common = {"steps": 4, "sampler": "Euler a"}
    cells = [cell("a", prompt=f"{CIRCLE} BREAK {SQUARE}", region_calc="attention", **common),
             cell("b", prompt=f"{SQUARE} ADDBASE {CIRCLE} ADDROW {SQUARE} ADDROW {CIRCLE}", regions="Rows",
                  base_ratio=0.3, region_calc="attention", seed=5, **common),
             cell("c", prompt=f"{CIRCLE} BREAK {SQUARE}", seed=3, **common),
             cell("d", prompt=CIRCLE, regions="off", seed=2, **common),
             cell("e", prompt=f"{SQUARE} BREAK {CIRCLE}", regions="Mask", region_mask="partial.png",
                  region_calc="attention", seed=4, **common)]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)


@pytest.mark.parametrize("calc", ["latent", "attention"])
def test_a_two_colour_mask_of_halves_is_the_columns_layout(backend, calc):
    two = f"{CIRCLE} BREAK {SQUARE}"
    columns = pixels(backend, prompt=two, region_calc=calc)
    assert np.abs(pixels(backend, prompt=two, regions="Mask", region_mask="halves.png", region_calc=calc)
                  - columns).max() <= 1
    # Region order is colour order, not position: the first prompt goes where the first colour is.
    swapped = pixels(backend, prompt=f"{SQUARE} BREAK {CIRCLE}", region_calc=calc)
    assert np.abs(pixels(backend, prompt=two, regions="Mask", region_mask="swapped.png", region_calc=calc)
                  - swapped).max() <= 1
    # Unpainted pixels follow the first region: the left half is still the first prompt's.
    assert np.abs(pixels(backend, prompt=two, regions="Mask", region_mask="partial.png", region_calc=calc)
                  - columns).max() <= 1


def test_region_colours_are_regional_prompters_and_the_mask_is_checked(backend, folder):
    assert [tuple(c) for c in region_masks.palette()[:4]] == [(128, 64, 64), (64, 128, 128), (96, 128, 64),
                                                              (96, 64, 128)]
    two = {"prompt": f"{CIRCLE} BREAK {SQUARE}", "regions": "Mask"}
    assert [p.param for p in backend.validate({**two, "region_mask": "halves.png"}) if p.severity == "error"] == []
    (missing,) = [p for p in backend.validate(two) if p.param == "region_mask"]
    assert "region_mask image" in missing.message
    (few,) = [p for p in backend.validate({**two, "region_mask": "one.png"}) if p.param == "region_mask"]
    assert "1 region colours" in few.message and "2 regions" in few.message and "(128, 64, 64)" in few.message
    assert [p.param for p in backend.validate({**two, "region_mask": "nowhere.png"})] == ["region_mask"]


def test_region_mask_paths_pass_the_viewers_root_check(backend, folder, tmp_path):
    assert backend.locate("region_mask", "halves.png") == (Path(folder) / "halves.png").resolve()
    assert path_problem(backend, "region_mask", "path", "halves.png", [Path(folder)]) is None
    assert "outside the root" in path_problem(backend, "region_mask", "path", "halves.png", [tmp_path])


def test_attention_calc_is_refused_where_cross_attention_is_not_the_models_own(backend):
    two = {"prompt": f"{CIRCLE} BREAK {SQUARE}", "regions": "Columns", "region_calc": "attention"}
    assert "region_calc" in [p.param for p in backend.validate({**two, "tile_diffusion": True})]
    assert "region_calc" in [p.param for p in backend.validate({**two, "ella": "on"})]


def test_a_regional_cell_carries_its_layout_drawn_over_its_image(backend):
    regional, plain = backend.render([cell("a", prompt=f"{CIRCLE} BREAK {SQUARE}", steps=2),
                                      cell("b", prompt=CIRCLE, regions="off", steps=2)])
    assert plain.files == {} and set(regional.files) == {"regions"}
    image = np.asarray(regional.image.convert("RGB"), dtype=np.float32)
    layout = np.asarray(regional.files["regions"].convert("RGB"), dtype=np.float32)
    first, second = region_masks.palette()[:2].astype(np.float32)
    # Away from the numbers and the border: each half tinted with its region's colour.
    assert np.abs(layout[:8, :56] - (0.6 * image[:8, :56] + 0.4 * first)).max() <= 1
    assert np.abs(layout[:8, 72:] - (0.6 * image[:8, 72:] + 0.4 * second)).max() <= 1
    assert (layout[:, 64] == 255).all()  # the border between the halves


def test_the_regions_example_and_the_region_calc_library_validate(capsys):
    from gridgen.cli import main
    from gridgen.resources import data_dir

    root = Path(__file__).resolve().parents[1]
    assert main(["validate", str(root / "grids" / "regions.yaml")]) == 0, capsys.readouterr().err
    axis = yaml.safe_load((data_dir("axes") / "region_calc.yaml").read_text(encoding="utf-8"))["axes"]["region_calc"]
    assert list(axis["values"]) == list(regions.CALCS)
    assert all(len(value["description"]) > 200 for value in axis["values"].values())
