"""The SD x4 upscaler as a model kind: agreement with diffusers' StableDiffusionUpscalePipeline, one UNet batch
for mixed cells, the size rules, a noise_level grid end to end, a single-file checkpoint, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.models import families, locate
from gridgen.backends.sd.stages import x4
from gridgen.errors import SpecError
from gridgen.params import Registry
from gridgen.runner import RunOptions, execute, prepare
from tests import tiny_models
from tests.batch_checks import assert_one_batch_renders_as_alone, count_denoised
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels

MAX_NOISE = 100


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with two 24x16 images, one 22x18 image, a mask and a tiny random x4 upscaler."""
    root = tmp_path_factory.mktemp("x4kind")
    picture(24, 16).save(root / "low.png")
    picture(24, 16, seed=3).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "other.png")
    picture(22, 18).save(root / "odd.png")
    Image.new("L", (24, 16), 255).save(root / "mask.png")
    tiny_models.build_x4(root / "tiny-x4", MAX_NOISE)
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"model": "tiny-x4", "init_image": "low.png", "prompt": "a red square", "seed": 1, "steps": 3,
            "sampler": "DDIM", "cfg_scale": 6.0, "noise_level": 20}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


# The kind


def test_a_7_channel_upscale_folder_is_the_x4_kind_and_renders(backend):
    info = locate.read_model_info(backend._model_path({"model": "tiny-x4"}))
    assert info.in_channels == 7 and info.vae_factor == 4
    assert backend.validate(cell().params) == []
    assert backend.validate(cell(pipeline="x4-upscaler").params) == []
    (result,) = backend.render([cell()])
    assert result.image.size == (96, 64)  # 4x the 24x16 init image


# Agreement with diffusers


@pytest.mark.parametrize(("noise_level", "sampler"), [(0, "DDIM"), (90, "Euler a")])
def test_x4_kind_matches_diffusers_upscale_pipeline(backend, folder, noise_level, sampler):
    from diffusers import StableDiffusionUpscalePipeline

    from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice

    (ours,) = backend.render([cell(noise_level=noise_level, sampler=sampler, negative_prompt="blurry")])
    pipe = StableDiffusionUpscalePipeline.from_pretrained(folder / "tiny-x4", local_files_only=True)
    pipe.scheduler = make_scheduler(scheduler_choice(sampler, "automatic"), backend._components.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt="a red square", negative_prompt="blurry", image=picture(24, 16), num_inference_steps=3,
                  guidance_scale=6.0, noise_level=noise_level, generator=torch.Generator("cpu").manual_seed(1),
                  output_type="np").images[0] * 255
    difference = np.abs(pixels(ours.image) - theirs)
    assert difference.mean() <= 2, f"{difference.mean():.3f}/255 (mean) from StableDiffusionUpscalePipeline"
    assert difference.max() <= 1  # rounding to 8 bits alone


def test_noise_level_and_the_image_change_the_upscale(backend):
    images = [pixels(r.image) for r in backend.render([cell(noise_level=0), cell(noise_level=90),
                                                                cell(init_image="other.png")])]
    assert np.abs(images[0] - images[1]).mean() > 1
    assert np.abs(images[0] - images[2]).mean() > 1


def test_the_shipped_tiny_x4_renders_as_a_model_what_its_upscale_stage_renders(tmp_path):
    from gridgen.tiny import data, tiny_folder

    sample = data.draw("red", "circle", "white", 14, 20, 30)
    Image.fromarray(sample.image).resize((16, 16), Image.Resampling.BICUBIC).save(tmp_path / "small.png")
    params = {"prompt": sample.caption, "seed": 4, "sampler": "Euler", "schedule": "automatic", "noise_level": 20}
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    try:
        (as_model,) = backend.render([Cell(index=0, key="0", coords=("0",), params={
            **params, "model": "gridgen-tiny-x4", "init_image": "small.png", "steps": 10, "cfg_scale": 3.0})])
    finally:
        backend.close()
    stage = x4.load_x4(tiny_folder("gridgen-tiny-x4"), torch.device("cpu"), torch.float32)
    as_stage = x4.x4_upscale(stage, Image.open(tmp_path / "small.png"),
                             {**params, "upscale_steps": 10, "upscale_cfg_scale": 3.0})
    assert np.abs(pixels(as_model.image) - pixels(as_stage)).max() <= 1
    bicubic = pixels(Image.open(tmp_path / "small.png").resize((64, 64), Image.Resampling.BICUBIC))
    error, bicubic_error = (float(np.abs(image - sample.image).mean()) for image in (pixels(as_model.image), bicubic))
    assert error < bicubic_error, f"{error:.2f}/255 from the drawn original; bicubic {bicubic_error:.2f}/255"


# Batching


def test_mixed_cells_share_one_unet_batch_and_render_as_they_do_alone(folder, monkeypatch):
    cells = [cell("a", noise_level=0, seed=1, cfg_scale=6.0),
             cell("b", noise_level=70, seed=2, cfg_scale=1.0, init_image="other.png", prompt=""),
             cell("c", noise_level=100, seed=1, cfg_scale=9.0, init_image="other.png", prompt="a blue circle"),
             cell("d", noise_level=30, seed=3, cfg_scale=4.0, negative_prompt="blurry")]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


def test_noise_level_is_a_base_param_and_denoise_is_not_read(backend):
    defaults = {**Registry().defaults(), **cell().params}
    key = backend._base_key
    assert key({**defaults, "noise_level": 10}) != key({**defaults, "noise_level": 50})
    assert key({**defaults, "denoise": 0.2}) == key({**defaults, "denoise": 0.9})
    assert backend.batch_key({**defaults, "denoise": 0.2}) == backend.batch_key({**defaults, "denoise": 0.9})


# Sizes


def test_width_and_height_are_the_output_size(backend):
    (given,) = backend.render([cell(width=64, height=32)])
    assert given.image.size == (64, 32)  # the init image was resized to 16x8 first
    (rounded,) = backend.render([cell(init_image="odd.png")])
    assert rounded.image.size == (80, 64)  # 22x18 rounded down to 20x16, as diffusers does
    (problem,) = backend.validate(cell(width=72, height=32).params)
    assert problem.param == "width" and "multiple of 16" in problem.message and "output size" in problem.message


# End to end


def test_a_noise_level_grid_runs_end_to_end_each_cell_once(folder, tmp_path, monkeypatch):
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-x4, init_image: low.png, steps: 2, sampler: Euler, cfg_scale: 4, prompt: a house}
        axes:
          noise_level: 0, 80
          seed: 1, 2
        """, name="x4kind.yaml")
    batches = count_denoised(monkeypatch)
    runs: list[int] = []
    original = x4.denoise
    monkeypatch.setattr(x4, "denoise", lambda *args, **kwargs: runs.append(len(args[2])) or original(*args, **kwargs))
    options = RunOptions(out=tmp_path / "out", batch_size=8, device="cpu")
    execute(prepare(spec, options), options, show_progress=False)
    assert batches == [4] and runs == [4]  # noise_level and seed do not split the batch; each cell once
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    out = {e["key"]: Image.open(tmp_path / "out" / e["file"]) for e in journal}
    assert sorted(out) == ["0/1", "0/2", "80/1", "80/2"]
    assert {image.size for image in out.values()} == {(96, 64)}
    assert np.abs(pixels(out["0/1"]) - pixels(out["80/1"])).mean() > 1


# A single-file checkpoint


def test_a_single_file_x4_checkpoint_renders_as_its_folder_does(tmp_path, monkeypatch):
    model = tiny_models.build(tmp_path / "x4-folder", "sd2-x4-upscaler", in_channels=7)
    monkeypatch.setattr(families, "CONFIG_ROOT", tiny_models.config_root(tmp_path / "configs", [model]))
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the CLIP vocabulary files are written
    model.write(tmp_path / "x4.safetensors")
    picture(24, 16).save(tmp_path / "low.png")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    try:
        single = cell(model="x4.safetensors", sampler="Euler", noise_level=350)
        assert locate.read_model_info(tmp_path / "x4.safetensors").config.name == "sd2-x4-upscaler"
        assert backend.validate(single.params) == []
        (from_file,) = backend.render([single])
        (from_folder,) = backend.render([cell(model="x4-folder", sampler="Euler", noise_level=350)])
        assert from_file.image.size == (48, 32)  # this tiny VAE scales by 2
        assert np.abs(pixels(from_file.image) - pixels(from_folder.image)).max() <= 1
        (problem,) = backend.validate({**single.params, "noise_level": 351})
        assert problem.param == "noise_level" and "(350, its max_noise_level)" in problem.message
    finally:
        backend.close()
        for cached in (locate.resolve_model, locate.read_model_info):
            cached.cache_clear()


# Errors, before any model loads


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"init_image": None}, "init_image", ["x4 upscaler", "set init_image"]),
    ({"noise_level": MAX_NOISE + 1}, "noise_level", [f"maximum of x4 upscaler 'tiny-x4' ({MAX_NOISE}",
                                                     f"use 0 to {MAX_NOISE}"]),
    ({"mask": "mask.png"}, "mask", ["x4 upscaler", "drop mask"]),
    ({"upscaler": "latent"}, "upscaler", ["img2img", "resampling or model upscaler"]),
    ({"pipeline": "img2img"}, "pipeline", ["pipeline img2img needs a 4-channel UNet", "x4-upscaler model"]),
])
def test_bad_x4_cells_are_problems_naming_the_param(backend, params, param, words):
    problems = [p for p in backend.validate({**cell().params, **params}) if p.param == param]
    assert problems, backend.validate({**cell().params, **params})
    for word in words:
        assert word in problems[0].message


def test_a_bad_x4_grid_stops_before_any_model_loads(folder, tmp_path, monkeypatch):
    from gridgen.backends.sd import render

    monkeypatch.setattr(render, "load_components", lambda *a: pytest.fail("a model was loaded"))
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-x4, init_image: low.png, steps: 2}
        axes:
          noise_level: 0, 150
        """, name="too-noisy.yaml")
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    assert "noise_level 150 is over the maximum of x4 upscaler 'tiny-x4'" in str(caught.value)


def test_in_fp16_the_x4_vae_stays_fp32_and_the_image_stays_close_to_fp32s(folder, backend):
    half = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", dtype="fp16"))
    try:
        (ours,) = half.render([cell()])
        assert half._components.unet.dtype == torch.float16 and half._components.vae.dtype == torch.float32
    finally:
        half.close()
    (full,) = backend.render([cell()])
    difference = np.abs(pixels(ours.image) - pixels(full.image)).mean()
    assert difference <= 2, f"fp16 is {difference:.2f}/255 (mean) from fp32"


def test_the_example_grid_runs_in_one_batch(tmp_path, monkeypatch):
    grid = Path(__file__).resolve().parents[1] / "grids" / "x4-upscale.yaml"
    batches = count_denoised(monkeypatch)
    options = RunOptions(out=tmp_path / "out", batch_size=12, device="cpu")
    execute(prepare(grid, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    assert batches == [12] and len(journal) == 12  # six noise levels x two prompts
    out = {e["key"]: pixels(Image.open(tmp_path / "out" / e["file"])) for e in journal}
    assert {image.shape for image in out.values()} == {(64, 64, 3)}
    assert np.abs(out["0/matching"] - out["0/other"]).mean() > 5  # the prompt steers the upscale
    assert np.abs(out["0/matching"] - out["350/matching"]).mean() > 1  # and so does the noise level
