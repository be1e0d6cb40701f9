"""depth2img (5-channel UNets): agreement with diffusers' StableDiffusionDepth2ImgPipeline with the model's own
depth estimator and with a given depth map, batching, depth estimates computed once per image, single files,
and the validation errors of its params."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.kinds import depth
from gridgen.backends.sd.models import families, locate
from gridgen.cli import main
from gridgen.tiny import TINY_MODEL_DIR
from tests import tiny_models
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels


def tiny_dpt(seed: int):
    """A random DPTForDepthEstimation of a few thousand weights and its image processor, at 32 pixels.

    The weights start wider than transformers' default: at its 0.02 the depth head's output is all but zero."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    config = DPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=16, backbone_out_indices=[0, 1], neck_hidden_sizes=[16, 32],
                       reassemble_factors=[2, 1], fusion_hidden_size=16, head_in_index=-1, initializer_range=0.2)
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return DPTForDepthEstimation(config).eval(), processor


def build_depth_folder(folder):
    """The gridgen-tiny text encoder and VAE with a random 5-channel UNet and a tiny DPT, saved as a depth2img
    pipeline."""
    from diffusers import StableDiffusionDepth2ImgPipeline

    estimator, processor = tiny_dpt(seed=0)
    StableDiffusionDepth2ImgPipeline(**tiny_models.tiny_parts(5), depth_estimator=estimator,
                                     feature_extractor=processor).save_pretrained(folder)
    return folder


def depth_picture(width: int, height: int) -> Image.Image:
    """A 16-bit depth image: a slope with a near disc in front of it."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    values = 8000 + 300 * y + 40000 * (((x - width / 3) ** 2 + (y - height / 2) ** 2) < (width / 5) ** 2)
    return Image.fromarray(values.astype(np.uint16))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with init images, depth images and tiny depth2img models and depth models."""
    root = tmp_path_factory.mktemp("depth")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    picture(48, 40, seed=5).save(root / "small.png")
    depth_picture(64, 64).save(root / "depth.png")
    depth_picture(24, 32).save(root / "depth-small.png")
    Image.new("L", (32, 32), 128).save(root / "flat.png")
    build_depth_folder(root / "tiny-depth")
    estimator, processor = tiny_dpt(seed=1)
    estimator.save_pretrained(root / "other-dpt")
    processor.save_pretrained(root / "other-dpt")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"model": "tiny-depth", "init_image": "init.png", "prompt": "a red square", "seed": 1, "steps": 4,
            "sampler": "Euler", "cfg_scale": 5.0, "denoise": 0.8}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def diffusers_pipeline(backend, estimator=None, processor=None):
    """diffusers' depth2img pipeline on the backend's loaded model and, by default, its depth model."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionDepth2ImgPipeline

    parts = backend._components
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config),
        depth_estimator=estimator, feature_extractor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe, **kwargs):
    return pipe("a red square", image=picture(64, 64), strength=0.8, num_inference_steps=4, guidance_scale=5.0,
                negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(1), output_type="np",
                **kwargs).images[0] * 255


# Agreement with diffusers


def test_depth2img_with_its_own_depth_model_matches_diffusers_depth2img_pipeline(backend, folder):
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    (ours,) = backend.render([cell(negative_prompt="blurry")])
    pipe = diffusers_pipeline(backend, DPTForDepthEstimation.from_pretrained(folder / "tiny-depth/depth_estimator"),
                              DPTImageProcessor.from_pretrained(folder / "tiny-depth/feature_extractor"))
    difference = np.abs(pixels(ours.image) - run_diffusers(pipe))
    assert difference.max() <= 2, f"up to {difference.max()}/255 from diffusers' StableDiffusionDepth2ImgPipeline"
    assert np.abs(pixels(ours.image) - pixels(picture(64, 64))).mean() > 5  # it redrew the image


def test_a_given_depth_map_matches_diffusers_with_that_depth_and_changes_the_image(backend, folder):
    (estimated,) = backend.render([cell(negative_prompt="blurry")])
    (given,) = backend.render([cell(negative_prompt="blurry", depth_map="depth.png")])
    values = np.asarray(Image.open(folder / "depth.png"), dtype=np.float32)
    theirs = run_diffusers(diffusers_pipeline(backend), depth_map=torch.from_numpy(values)[None])
    difference = np.abs(pixels(given.image) - theirs)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from diffusers' StableDiffusionDepth2ImgPipeline"
    # The fifth channel is read: another depth, another image.
    assert np.abs(pixels(given.image) - pixels(estimated.image)).mean() > 1


def test_depth_is_normalised_as_diffusers_normalises_a_depth_map():
    raw = torch.tensor([[[0.0, 2.0], [4.0, 8.0]]])
    scaled = depth.normalised(raw, (4, 4))
    assert scaled.shape == (1, 1, 4, 4)
    assert scaled.amin() == -1 and scaled.amax() == 1
    assert torch.equal(depth.normalised(torch.full((1, 3, 3), 5.0), (2, 2)), torch.zeros(1, 1, 2, 2))


# Batching and the depth cache


def test_cells_of_mixed_prompts_seeds_cfg_images_and_depths_batch_as_they_render_alone(folder, monkeypatch):
    cells = [cell("a", prompt="a red square", seed=1, cfg_scale=5.0),
             cell("b", prompt="a blue circle on grass", seed=7, cfg_scale=1.0, init_image="other.png"),
             cell("c", prompt="", seed=3, cfg_scale=9.0, depth_map="depth.png"),
             cell("d", prompt="a red square", seed=2, cfg_scale=0.0, init_image="other.png",
                  depth_model="other-dpt")]
    batches: list[int] = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: batches.append(len(batch)) or
                        original(self, batch))
    together = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", max_batch=8))
    assert len({together.batch_key(c.params) for c in cells}) == 1
    batched = {result.cell.key: pixels(result.image) for result in together.render(cells)}
    together.close()
    assert batches == [4]
    for one in cells:
        alone = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
        (result,) = alone.render([one])
        alone.close()
        assert np.abs(pixels(result.image) - batched[one.key]).max() <= 1, one.key


def test_a_grid_runs_end_to_end_and_estimates_each_images_depth_once(folder, tmp_path, monkeypatch, capsys):
    runs: list[str] = []
    estimate = depth.DepthMaps._estimate
    monkeypatch.setattr(depth.DepthMaps, "_estimate", lambda self, source, image: runs.append(source.weights.name)
                        or estimate(self, source, image))
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-depth, steps: 2, sampler: Euler, denoise: 0.7}
        axes:
          init_image: init.png, small.png
          prompt: a red square, a green field
          cfg_scale: 1, 6
        """, name="depth-grid.yaml")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu", "--batch-size", "2"]) == 0
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 8
    sizes = {entry["key"].split("/")[0]: Image.open(out / entry["file"]).size for entry in journal}
    assert sizes == {"init_png": (64, 64), "small_png": (48, 40)}  # outputs keep their init image's size
    assert runs == ["depth_estimator", "depth_estimator"]  # once per image, across four batches
    assert "depth maps: 2 estimated, 6 reused" in capsys.readouterr().out


# Single files


@pytest.fixture()
def single_file(tmp_path, monkeypatch):
    """A tiny SD 2 depth model written as an A1111-style single file, with a config root describing it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny_models.build(tmp_path / "sd2-depth", "sd2-depth", in_channels=5, seed=4)
    monkeypatch.setattr(families, "CONFIG_ROOT", tiny_models.config_root(tmp_path / "configs", [model]))
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()
    yield model.write(tmp_path / "depth-model.safetensors")
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()


def test_a_single_file_depth_model_needs_a_depth_source_and_renders_with_one(folder, single_file):
    backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    params = {"model": str(single_file), "init_image": "init.png", "steps": 2, "sampler": "Euler"}
    (problem,) = backend.validate(params)
    assert problem.param == "depth_map"
    for words in ("single-file checkpoint holds none", "give depth_map", "depth_model"):
        assert words in problem.message
    for source in ({"depth_map": "depth.png"}, {"depth_model": "tiny-depth"}):
        assert backend.validate({**params, **source}) == []
        (result,) = backend.render([Cell(index=0, key="0", coords=("0",), params={**params, **source})])
        assert result.image.size == (64, 64)
        assert np.abs(pixels(result.image) - pixels(picture(64, 64))).mean() > 1
    backend.close()


# Validation


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"depth_map": "missing.png"}, "depth_map", ["missing.png", "no such file", "relative to the spec file"]),
    ({"depth_map": "flat.png"}, "depth_map", ["flat.png", "same value", "near"]),
    ({"depth_model": "tiny-depth/unet"}, "depth_model", ["UNet2DConditionModel", "not a DPT depth model"]),
    ({"depth_model": str(TINY_MODEL_DIR)}, "depth_model",
     ["is a folder but not a DPT depth model or depth2img pipeline folder", "no config.json"]),
    ({"depth_model": "no-such-dpt"}, "depth_model", ["not found", "no-such-dpt"]),
    ({"depth_model": "other-dpt", "depth_map": "depth.png"}, "depth_model", ["both set", "give one"]),
    ({"init_image": None}, "init_image", ["depth2img model", "give init_image"]),
    ({"mask": "init.png"}, "mask", ["read no mask"]),
    ({"model": "gridgen-tiny", "depth_map": "depth.png"}, "depth_map",
     ["for depth2img models", "txt2img model"]),
    ({"model": "gridgen-tiny", "depth_model": "other-dpt"}, "depth_model", ["for depth2img models"]),
])
def test_bad_depth_params_are_problems_naming_the_param_and_what_to_do(backend, params, param, words):
    problems = backend.validate({**cell().params, **params})
    found = [p for p in problems if p.param == param]
    assert found, problems
    for word in words:
        assert word in found[0].message, found[0].message


def test_depth_params_and_sources_that_fit_pass_validation(backend, folder):
    for params in ({}, {"depth_map": "depth-small.png"}, {"depth_model": "other-dpt"},
                   {"depth_model": str(folder / "tiny-depth")}, {"pipeline": "depth2img"}):
        assert backend.validate({**cell().params, **params}) == [], params


def test_a_depth_model_id_is_found_in_the_hugging_face_cache_only(backend, folder, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-dpt" / "snapshots" / "0123abcd"
    shutil.copytree(folder / "other-dpt", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert backend.validate({**cell().params, "depth_model": "someone/tiny-dpt"}) == []
    (problem,) = backend.validate({**cell().params, "depth_model": "someone/other-dpt"})
    assert problem.param == "depth_model" and "the Hugging Face cache" in problem.message


def test_a_depth_grid_with_bad_params_stops_before_any_model_loads(folder, tmp_path, monkeypatch):
    from gridgen.backends.sd import render

    monkeypatch.setattr(render, "load_components", lambda *a: pytest.fail("a model was loaded"))
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-depth, steps: 2, init_image: init.png}
        axes:
          depth_map: depth.png, missing.png
        """, name="bad-depth.yaml")
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
