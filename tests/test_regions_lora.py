"""LoRAs by region: in latent calculation each region applies the `<lora:...>` tags of its own prompt (UNet and
text-encoder weights), a tag in every region is the LoRA on the whole cell, cells with different region LoRAs
share a batch, and the grid keeps the tags in the prompt and records what each region applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from gridgen.backends import BackendContext
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.cli import main
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.network_fixtures import text_encoder_kohya_weights, unet_lora_weights, write_diffusers_lora
from tests.spec_helpers import write_spec
from tests.test_regions import CIRCLE, SQUARE, cell

TWICE = f"{CIRCLE} BREAK {CIRCLE}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions_lora")
    write_diffusers_lora(root / "loras" / "style", unet_lora_weights(seed=0))
    save_file(text_encoder_kohya_weights(seed=2), root / "loras" / "words.safetensors")
    return root


@pytest.fixture(scope="module")
def backend(folder):
    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    yield instance
    instance.close()


def render(backend, **params):
    (result,) = backend.render([cell(**{"region_calc": "latent", **params})])
    return np.asarray(result.image.convert("RGB"), dtype=np.float32), result.metadata


@pytest.mark.parametrize("tag", ["style:1", "words:1"])
def test_a_lora_in_every_region_is_that_lora_on_the_whole_cell(backend, tag):
    whole, _ = render(backend, prompt=TWICE, lora=[tag])
    everywhere, _ = render(backend, prompt=f"{CIRCLE} <lora:{tag}> BREAK {CIRCLE} <lora:{tag}>")
    assert np.abs(everywhere - whole).max() <= 1
    plain, _ = render(backend, prompt=TWICE)
    assert np.abs(whole - plain).mean() > 1  # the LoRA does change the picture


@pytest.mark.parametrize("tag", ["style:1", "words:1"])
def test_a_lora_in_one_region_changes_that_region_and_leaves_the_other_nearer_the_plain_picture(backend, tag):
    plain, _ = render(backend, prompt=TWICE)
    whole, _ = render(backend, prompt=TWICE, lora=[tag])
    left, metadata = render(backend, prompt=f"{CIRCLE} <lora:{tag}> BREAK {CIRCLE}")
    changed = np.abs(left - plain)
    assert changed[:, :64].mean() > 2 * changed[:, 64:].mean()
    # Each half is nearer the picture its own region's model draws than the one the other region's draws.
    assert np.abs(left - whole)[:, :64].mean() < changed[:, :64].mean()
    assert changed[:, 64:].mean() < np.abs(left - whole)[:, 64:].mean()
    assert [len(loras) for loras in metadata["region_loras"]] == [1, 0] and "loras" not in metadata


def test_in_attention_calc_a_region_lora_applies_to_the_whole_cell(backend):
    whole, _ = render(backend, prompt=TWICE, lora=["style:1"], region_calc="attention")
    tagged, _ = render(backend, prompt=f"{CIRCLE} <lora:style:1> BREAK {CIRCLE}", region_calc="attention")
    assert np.abs(tagged - whole).max() <= 1


def test_cells_with_different_region_loras_render_in_one_batch_as_alone(folder, monkeypatch):
    common = {"steps": 4, "sampler": "Euler a", "region_calc": "latent"}
    cells = [cell("a", prompt=f"{CIRCLE} <lora:style:1> BREAK {SQUARE}", **common),
             cell("b", prompt=f"{SQUARE} ADDBASE {CIRCLE} ADDROW {SQUARE} <lora:words:0.8> <lora:style:0.5>",
                  regions="Rows", base_ratio=0.3, seed=5, **common),
             cell("c", prompt=f"{SQUARE} <lora:style:0.5> ADDBASE {CIRCLE} BREAK {SQUARE}", base_ratio=0.4, seed=3,
                  **common),
             cell("d", prompt=CIRCLE, regions="off", seed=2, **common),
             cell("e", prompt=f"{CIRCLE} <lora:words:1> BREAK {SQUARE}", seed=4, **{**common,
                                                                                   "region_calc": "attention"})]
    assert_one_batch_renders_as_alone(Path(folder), cells, monkeypatch)


def test_a_missing_region_lora_is_a_problem_of_the_prompt(backend):
    problems = [p for p in backend.validate(cell(prompt=f"{CIRCLE} <lora:nope:1> BREAK {SQUARE}").params)
                if p.severity == "error"]
    assert [p.param for p in problems] == ["prompt"] and "nope" in problems[0].message


GRID = """
grid:
  format: png
  params: {model: gridgen-tiny, steps: 3, width: 64, height: 32, sampler: Euler, regions: Columns}
axes:
  region_calc: latent, attention
  prompt: a red circle <lora:style:0.5> BREAK a red square || a red circle BREAK a red square <LORA:nope>
"""


def test_the_grid_keeps_region_tags_in_the_prompt_and_records_each_regions_loras(folder, capsys):
    spec = write_spec(folder, GRID, name="regional-loras.yaml")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:6:" in err and "lora 'nope' not found" in err and "not supported" not in err
    spec.write_text(spec.read_text().replace(" || a red circle BREAK a red square <LORA:nope>", ""))
    out = folder / "regional-loras"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    entries = {e["params"]["region_calc"]: e for e in map(json.loads, (out / "journal.jsonl").read_text().splitlines())}
    latent, attention = entries["latent"], entries["attention"]
    assert "<lora:style:0.5>" in latent["params"]["prompt"] and not latent["params"].get("lora")
    assert latent["metadata"]["region_loras"] == [[["loras/style/pytorch_lora_weights.safetensors", 0.5]], []]
    assert "<lora" not in attention["params"]["prompt"] and attention["params"]["lora"] == ["style:0.5"]
    assert attention["metadata"]["loras"] == [["loras/style/pytorch_lora_weights.safetensors", 0.5]]


def test_a_hires_pass_after_a_batch_with_region_loras_runs_with_each_cells_own_loras(folder):
    # The batch's last LoRA group is the region's, so the hires pass must set the plain cell's own (none) again.
    common = {"steps": 4, "sampler": "Euler", "region_calc": "latent", "upscaler": "hires:lanczos", "upscale_by": 2,
              "hires_denoise": 0.5, "hires_steps": 3}
    plain = cell("plain", prompt=CIRCLE, regions="off", seed=2, **common)
    regional = cell("regional", prompt=f"{CIRCLE} BREAK {SQUARE} <lora:style:1>", seed=3, **common)
    together_backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    together = {result.cell.key: result for result in together_backend.render([plain, regional])}
    together_backend.close()
    alone_backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    for one in (plain, regional):
        (alone,) = alone_backend.render([one])
        assert alone.image.size == (256, 128)
        difference = np.abs(np.asarray(alone.image, dtype=np.float32) - np.asarray(together[one.key].image,
                                                                                    dtype=np.float32))
        assert difference.max() <= 1, one.key
    alone_backend.close()


def test_a_regional_cells_hires_pass_redraws_with_its_regions_and_their_loras(backend):
    hires = {"upscaler": "hires:lanczos", "upscale_by": 2, "hires_denoise": 0.6, "hires_steps": 4}
    whole, _ = render(backend, prompt=TWICE, lora=["style:1"], **hires)
    tagged, _ = render(backend, prompt=f"{CIRCLE} <lora:style:1> BREAK {CIRCLE} <lora:style:1>", **hires)
    assert whole.shape == (128, 256, 3) and np.abs(tagged - whole).max() <= 1
    plain_hires, _ = render(backend, prompt=TWICE, **hires)
    assert np.abs(plain_hires - whole).mean() > 1  # the LoRA counts in the hires pass
