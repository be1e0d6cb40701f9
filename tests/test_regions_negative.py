"""Negative prompts split by region (Regional Prompter reads BREAK in the negative prompt as it does in the prompt):
one part per region, the base's first, in latent and attention calculation, on gridgen-tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridgen.backends.sd.text import regions
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_regions import CIRCLE, SQUARE, cell

TWICE = f"{CIRCLE} BREAK {CIRCLE}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("regions_negative")


def pixels(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return np.asarray(result.image.convert("RGB"), dtype=np.float32)


def test_the_negative_prompt_splits_as_regional_prompter_splits_it():
    assert regions.negatives({"prompt": TWICE, "negative_prompt": "blurry"}) == ["blurry"]
    assert regions.negatives({"prompt": "a BREAK b", "negative_prompt": "x BREAK y"}) == ["x", "y"]
    # With a base prompt the first part is the base's; `negatives` lists it last, as `layout` lists the base.
    assert regions.negatives({"prompt": "base ADDBASE a BREAK b", "negative_prompt": "n0 BREAK n1 BREAK n2"}) == \
        ["n1", "n2", "n0"]
    assert regions.negatives({"prompt": "a BREAK b", "negative_prompt": "lowres ADDCOMM x BREAK y"}) == \
        ["lowres x", "lowres y"]


def test_a_negative_prompt_with_another_number_of_parts_is_a_problem(backend):
    problems = [p for p in backend.validate(cell(prompt=TWICE, negative_prompt="a BREAK b BREAK c").params)
                if p.severity == "error"]
    assert [p.param for p in problems] == ["negative_prompt"] and "3 parts" in problems[0].message
    assert [p for p in backend.validate(cell(prompt=f"x ADDBASE {TWICE}", negative_prompt="a BREAK b BREAK c").params)
            if p.severity == "error"] == []


@pytest.mark.parametrize("calc", ["latent", "attention"])
def test_the_same_negative_in_every_region_is_the_negative_prompt_unsplit(backend, calc):
    unsplit = pixels(backend, prompt=TWICE, negative_prompt=SQUARE, region_calc=calc)
    assert np.abs(pixels(backend, prompt=TWICE, negative_prompt=f"{SQUARE} BREAK {SQUARE}", region_calc=calc)
                  - unsplit).max() <= 1
    assert np.abs(unsplit - pixels(backend, prompt=TWICE, region_calc=calc)).mean() > 1  # the negative counts


@pytest.mark.parametrize("calc", ["latent", "attention"])
def test_a_regions_negative_changes_that_region_most(backend, calc):
    plain = pixels(backend, prompt=TWICE, region_calc=calc)
    changed = np.abs(pixels(backend, prompt=TWICE, negative_prompt=f"{CIRCLE} BREAK ", region_calc=calc) - plain)
    assert changed[:, :64].mean() > 2 * changed[:, 64:].mean()


def test_split_and_shared_negatives_render_in_one_batch_as_alone(folder, monkeypatch):
    common = {"steps": 4, "sampler": "Euler a"}
    cells = [cell("a", prompt=f"{CIRCLE} BREAK {SQUARE}", negative_prompt=f"{SQUARE} BREAK {CIRCLE}",
                  region_calc="attention", **common),
             cell("b", prompt=f"{SQUARE} ADDBASE {CIRCLE} ADDROW {SQUARE}", negative_prompt="blurry BREAK BREAK red",
                  regions="Rows", base_ratio=0.3, region_calc="attention", seed=5, **common),
             cell("c", prompt=f"{CIRCLE} BREAK {SQUARE}", negative_prompt=f"BREAK {CIRCLE}", seed=3, **common),
             cell("d", prompt=f"{CIRCLE} BREAK {SQUARE}", negative_prompt="blurry", region_calc="attention", seed=4,
                  **common),
             cell("e", prompt=CIRCLE, regions="off", seed=2, **common)]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)
