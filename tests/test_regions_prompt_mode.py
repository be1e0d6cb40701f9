"""Regional Prompter's prompt mode on gridgen-tiny: a region found where the main prompt's cross-attention looks at
the region prompt's last word, then drawn with the region prompt; overlaps shared (Prompt) or given to the later
region (Prompt-Ex); refused where it cannot work; per sample in a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridgen.backends.sd import render
from gridgen.backends.sd.text import regions
from gridgen.params import Registry
from gridgen.tiny import evaluate as ev
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_regions import CIRCLE, RED, SQUARE, cell

RECOLOURED = f"{RED} BREAK a blue circle on a white background, circle"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("regions_prompt_mode")


@pytest.fixture
def found_masks(monkeypatch):
    """Every prompt-mode mask the backend finds from now on, per cell key."""
    found: dict[str, list[np.ndarray]] = {}
    original = render.prompt_regions.find

    def spy(unet, prompts, batch, *args, **kwargs):
        masks = original(unet, prompts, batch, *args, **kwargs)
        found.update({str(batch[index]["seed"]): value for index, value in masks.items()})
        return masks

    monkeypatch.setattr(render.prompt_regions, "find", spy)
    return found


def test_prompt_mode_reads_the_main_prompt_regions_and_targets():
    assert regions.canonical("prompt") == "Prompt" and regions.canonical("prompt-ex") == regions.PROMPT_EX
    split = regions.prompt_regions("a girl, shirt, shorts BREAK (forest printed:1.3) T-shirt, shirt")
    assert (split.main, split.targets, split.based) == ("a girl, shirt, shorts", ("shirt",), False)
    based = regions.prompt_regions("a room ADDBASE a cat, cat BREAK a dog, dog")
    assert (based.main, based.regions, based.targets, based.based) == \
        ("a room", ("a cat, cat", "a dog, dog"), ("cat", "dog"), True)
    assert regions.thresholds({"region_threshold": "0.3, 0.5"}, 3) == [0.3, 0.5, 0.3]


def test_overlapping_masks_are_shared_in_prompt_mode_and_go_to_the_later_region_in_prompt_ex():
    first, second = np.array([[1.0, 1.0, 0.0]]), np.array([[0.0, 1.0, 1.0]])
    shared = regions.combined([first, second], exclusive=False)
    assert np.array_equal(shared[0], [[1.0, 0.5, 0.0]]) and np.array_equal(shared[1], [[0.0, 0.5, 1.0]])
    exclusive = regions.combined([first, second], exclusive=True)
    assert np.array_equal(exclusive[0], [[1.0, 0.0, 0.0]]) and np.array_equal(exclusive[1], second)
    layout = regions.layout({**cell(prompt=f"{CIRCLE} BREAK {SQUARE}, square").params, "regions": "Prompt"}, None,
                            [first])
    assert np.array_equal(layout[0][1] * layout[0][2] + layout[1][1] * layout[1][2], np.ones((1, 3)))


def test_the_region_is_found_on_the_object_the_target_word_names(backend, found_masks):
    # The main prompt alone draws the object where its attention to "circle" is, so the mask found from that
    # attention should cover the object the plain render draws.
    overlaps = []
    for seed in range(1, 9):
        (plain,) = backend.render([cell(str(seed), prompt=RED, seed=seed, regions="off")])
        list(backend.render([cell(str(seed), prompt=RECOLOURED, seed=seed, regions="Prompt")]))
        pixels = np.asarray(plain.image.convert("RGB"), dtype=np.int32)
        drawn = (np.abs(pixels - 255).sum(-1) > 120).reshape(16, 4, 32, 4).mean((1, 3)) > 0.5  # at latent size
        (mask,) = found_masks[str(seed)]
        overlaps.append((drawn & (mask > 0)).sum() / max((drawn | (mask > 0)).sum(), 1))
        assert mask.mean() < 0.5
    assert np.mean(overlaps) >= 0.4, overlaps


def test_the_region_prompt_redraws_the_found_object(backend):
    results = backend.render([cell(str(seed), prompt=RECOLOURED, seed=seed, regions="Prompt",
                                   region_calc=Registry().defaults()["region_calc"]) for seed in range(1, 11)])
    colours = [ev.classify(np.asarray(result.image.convert("RGB"))).color for result in results]
    assert colours.count("blue") >= 8, colours  # the main prompt alone draws red in all ten


def test_a_prompt_mode_cell_records_its_layout_and_no_private_metadata(backend):
    (result,) = backend.render([cell(prompt=RECOLOURED, regions="Prompt-Ex", steps=4)])
    assert result.files["regions"].size == result.image.size
    assert regions.FOUND not in result.metadata


def test_prompt_mode_problems(backend, folder):
    def errors(**params):
        return [(p.param, p.severity) for p in backend.validate({**cell(**params).params}) if p.severity == "error"]

    assert errors(prompt=RED, regions="Prompt") == [("regions", "error")]
    assert errors(prompt=f"{RED} BREAK a blue circle,", regions="Prompt") == [("prompt", "error")]
    assert errors(prompt=RECOLOURED, regions="Prompt", region_threshold="1.5") == [("region_threshold", "error")]
    Image.new("RGB", (128, 64), "white").save(folder / "init.png")
    assert errors(prompt=RECOLOURED, regions="Prompt", init_image="init.png", denoise=0.5) == [("regions", "error")]
    assert errors(prompt=RECOLOURED, regions="Prompt", tile_diffusion=True) == [("regions", "error")]
    warnings = [p for p in backend.validate(cell(prompt=f"{RED} BREAK a blue dog, dog", regions="Prompt").params)
                if p.severity == "warning"]
    assert warnings and "'dog' is not in the main prompt" in warnings[0].message


def test_prompt_mode_matrix_and_plain_cells_render_in_one_batch_as_alone(folder, monkeypatch):
    common = {"steps": 4, "sampler": "Euler a"}
    cells = [cell("a", prompt=RECOLOURED, regions="Prompt", **common),
             cell("b", prompt=f"{SQUARE} ADDBASE {RED} BREAK a blue square on a white background, square",
                  regions="Prompt-Ex", region_calc="latent", base_ratio=0.3, seed=5, **common),
             cell("c", prompt=f"{CIRCLE} BREAK {SQUARE}", region_calc="latent", seed=3, **common),
             cell("d", prompt=CIRCLE, regions="off", seed=2, **common)]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)


def test_a_prompt_mode_cells_hires_pass_redraws_with_the_regions_it_found(backend):
    hires = {"upscaler": "hires:lanczos", "upscale_by": 2, "hires_denoise": 0.6, "hires_steps": 4, "steps": 8}
    (result,) = backend.render([cell(prompt=RECOLOURED, regions="Prompt", **hires)])
    assert result.image.size == (256, 128) and result.files["regions"].size == (256, 128)
