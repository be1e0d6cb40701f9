"""unCLIP image variations: telling an unCLIP folder apart, agreement with diffusers' StableUnCLIPImg2ImgPipeline,
one UNet batch for mixed cells, one image embedding per image, a noise_level grid end to end, and the errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends.base import Cell
from gridgen.backends.sd.models import locate
from gridgen.errors import ModelError, SpecError
from gridgen.params import Registry, coerce
from gridgen.runner import RunOptions, execute, prepare
from gridgen.tiny import TINY_MODEL_DIR
from tests.batch_checks import assert_one_batch_renders_as_alone, count_denoised
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels

EMBEDDING = 32  # the CLIP image embedding's width; the UNet's class input is twice it (embedding + noise level)
NOISE_STEPS = 800  # the image-noising schedule's length: noise levels 0-799 fit this model


def build_unclip_folder(folder):
    """A random unCLIP model on the gridgen-tiny text encoder, tokenizer and VAE, saved as diffusers saves one."""
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        EulerDiscreteScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    config = dict(UNet2DConditionModel.load_config(TINY_MODEL_DIR / "unet"))
    unet = UNet2DConditionModel.from_config({**config, "class_embed_type": "projection",
                                             "projection_class_embeddings_input_dim": 2 * EMBEDDING})
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=EMBEDDING, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        intermediate_size=37, patch_size=4))
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBEDDING)
    with torch.no_grad():  # statistics that are not the identity, so scaling and unscaling are exercised
        normalizer.mean.normal_(0, 0.2)
        normalizer.std.uniform_(0.5, 1.5)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=encoder,
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=NOISE_STEPS),
        tokenizer=CLIPTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(TINY_MODEL_DIR / "text_encoder"), unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(TINY_MODEL_DIR / "scheduler"),
        vae=AutoencoderKL.from_pretrained(TINY_MODEL_DIR / "vae"))
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with two images (one of another size than the model's) and a tiny random unCLIP model."""
    root = tmp_path_factory.mktemp("unclip")
    picture(64, 64).save(root / "init.png")
    other = Image.new("RGB", (40, 48), (200, 30, 30))  # far from init.png's gradients, in CLIP's eyes too
    other.paste((240, 240, 240), (8, 10, 24, 30))
    other.save(root / "other.png")
    Image.new("L", (64, 64), 255).save(root / "mask.png")
    build_unclip_folder(root / "tiny-unclip")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"model": "tiny-unclip", "init_image": "init.png", "prompt": "a red square", "seed": 1, "steps": 4,
            "sampler": "Euler", "cfg_scale": 5.0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def count_encoded_images(monkeypatch) -> list[int]:
    """Rows the CLIP image encoder is run on, one entry per call, for models loaded from now on."""
    from gridgen.backends.sd.kinds import unclip

    calls: list[int] = []
    original = unclip.load_image_parts

    def load_counted(*args):
        parts = original(*args)
        parts.encoder.register_forward_hook(lambda module, inputs, output: calls.append(len(output.image_embeds)))
        return parts

    monkeypatch.setattr(unclip, "load_image_parts", load_counted)
    return calls


# The kind


def test_an_unclip_folder_is_its_own_kind_though_its_unet_has_4_channels(folder, tmp_path):
    info = locate.read_model_info(folder / "tiny-unclip")
    assert info.unclip and info.in_channels == 4 and info.native_size == 64
    assert not locate.read_model_info(TINY_MODEL_DIR).unclip
    # Without the pipeline's class name, the image parts next to a projection UNet still tell it.
    renamed = shutil.copytree(folder / "tiny-unclip", tmp_path / "renamed")
    index = json.loads((renamed / "model_index.json").read_text())
    (renamed / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    assert locate.read_model_info(renamed).unclip
    # A UNet that reads image embeddings in a folder with nothing to make them from is refused by name.
    for part in ("image_encoder", "image_normalizer", "image_noising_scheduler", "feature_extractor"):
        shutil.rmtree(renamed / part)
    with pytest.raises(ModelError, match="class_embed_type projection"):
        locate.read_model_info.__wrapped__(renamed)
    incomplete = shutil.copytree(folder / "tiny-unclip", tmp_path / "incomplete")
    for weights in (incomplete / "image_encoder").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelError, match="incomplete: .*image_encoder"):
        locate.read_model_info(incomplete)


def test_a_single_file_unclip_checkpoint_is_named_and_refused(tmp_path):
    from safetensors.torch import save_file

    from gridgen.backends.sd.models import families

    shapes = {families.UNET_INPUT: (8, 4, 3, 3), families.UNCLIP_LABEL: (8, 16),
              "cond_stage_model.model.positional_embedding": (77, 8)}
    path = tmp_path / "sd21-unclip-h.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    with pytest.raises(ModelError, match="SD 2.x unCLIP checkpoint.*diffusers folders"):
        locate.read_model_info(path)


# Agreement with diffusers


@pytest.mark.parametrize(("noise_level", "sampler"), [(0, "Euler"), (500, "Euler a")])
def test_unclip_matches_diffusers_stable_unclip_img2img_pipeline(backend, folder, noise_level, sampler):
    from diffusers import StableUnCLIPImg2ImgPipeline

    from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice

    (ours,) = backend.render([cell(noise_level=noise_level, sampler=sampler, negative_prompt="blurry")])
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(folder / "tiny-unclip")
    pipe.scheduler = make_scheduler(scheduler_choice(sampler, "automatic"), backend._components.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(picture(64, 64), "a red square", num_inference_steps=4, guidance_scale=5.0,
                  negative_prompt="blurry", noise_level=noise_level, generator=torch.Generator("cpu").manual_seed(1),
                  output_type="np").images[0] * 255
    difference = np.abs(pixels(ours.image) - theirs)
    assert difference.mean() <= 2, f"{difference.mean():.3f}/255 (mean) from StableUnCLIPImg2ImgPipeline"
    assert difference.max() <= 1  # rounding to 8 bits alone


def test_the_noise_level_and_the_image_change_the_variation(backend):
    images = {key: pixels(result.image) for key, result in zip(("a", "b", "c"), backend.render([
        cell(noise_level=0), cell(noise_level=600), cell(noise_level=0, init_image="other.png")]), strict=True)}
    assert np.abs(images["a"] - images["b"]).mean() > 1
    assert np.abs(images["a"] - images["c"]).mean() > 1


# Batching and the embedding cache


def test_mixed_cells_share_one_unet_batch_and_render_as_they_do_alone(folder, monkeypatch):
    cells = [cell("a", noise_level=0, seed=1, cfg_scale=5.0),
             cell("b", noise_level=300, seed=2, cfg_scale=1.0, init_image="other.png", prompt=""),
             cell("c", noise_level=700, seed=1, cfg_scale=8.0, init_image="other.png"),
             cell("d", noise_level=100, seed=3, cfg_scale=5.0, negative_prompt="blurry")]
    # Two CPU shards: the UNet batch is split in slices, class labels sliced with the latents.
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


def test_each_image_is_embedded_once(backend, monkeypatch):
    encoded = count_encoded_images(monkeypatch)
    list(backend.render([cell("a", noise_level=0), cell("b", noise_level=300), cell("c", init_image="other.png")]))
    list(backend.render([cell("d", seed=7), cell("e", seed=7, init_image="other.png", noise_level=50)]))
    assert sum(encoded) == 2  # init.png and other.png, each once, across cells and batches
    assert "image embeddings: 3 cached, 2 encoded" in backend.stats()


# End to end


def test_a_noise_level_grid_runs_end_to_end_in_one_batch(folder, tmp_path, monkeypatch):
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-unclip, init_image: other.png, steps: 2, sampler: Euler, cfg_scale: 4}
        axes:
          noise_level: 0, 400
          seed: 1, 2
        """, name="variations.yaml")
    batches = count_denoised(monkeypatch)
    encoded = count_encoded_images(monkeypatch)
    options = RunOptions(out=tmp_path / "out", batch_size=8, device="cpu")
    execute(prepare(spec, options), options, show_progress=False)
    assert batches == [4] and sum(encoded) == 1  # noise_level does not split the batch; one image, one embedding
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    out = {e["key"]: Image.open(tmp_path / "out" / e["file"]) for e in journal}
    assert sorted(out) == ["0/1", "0/2", "400/1", "400/2"]
    assert {image.size for image in out.values()} == {(64, 64)}  # the UNet's size, not the 40x48 init image's
    assert np.abs(pixels(out["0/1"]) - pixels(out["400/1"])).mean() > 1


def test_the_noise_level_library_teaches_every_level(tmp_path):
    from gridgen.spec import load_spec

    spec = load_spec(write_spec(tmp_path, """
        include: axes/unclip_noise_level.yaml
        grid:
          params: {model: tiny-unclip, init_image: init.png}
        """))
    (axis,) = spec.axes
    assert axis.id == "noise_level" and len(axis.description) > 200 and len(axis.values) >= 5
    levels = [value.params["noise_level"] for value in axis.values]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 999
    for value in axis.values:
        assert value.title and len(value.description) > 80, value.key


# Errors, before any model loads


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"init_image": None}, "init_image", ["unCLIP model", "set init_image"]),
    ({"noise_level": NOISE_STEPS}, "noise_level", [f"maximum of unCLIP model 'tiny-unclip' ({NOISE_STEPS - 1}",
                                                   "image_noising_scheduler"]),
    ({"mask": "mask.png"}, "mask", ["unCLIP model", "drop mask"]),
    ({"pipeline": "img2img"}, "pipeline", ["unclip model", "drop `pipeline`"]),
    ({"init_image": "missing.png"}, "init_image", ["no such file"]),
])
def test_bad_unclip_cells_are_problems_naming_the_param(backend, params, param, words):
    problems = [p for p in backend.validate({**cell().params, **params}) if p.param == param]
    assert problems, backend.validate({**cell().params, **params})
    for word in words:
        assert word in problems[0].message


def test_a_good_unclip_cell_has_no_problems(backend):
    assert backend.validate({**cell().params, "noise_level": NOISE_STEPS - 1, "prompt": ""}) == []


def test_noise_level_over_999_is_refused_by_the_registry():
    param = Registry().lookup("noise_level")
    assert coerce(param, 999) == 999
    with pytest.raises(ValueError, match="<= 999"):
        coerce(param, 1000)


def test_on_other_models_noise_level_is_still_the_x4_upscalers(backend):
    def problems(**params):
        return [p for p in backend.validate({"model": "gridgen-tiny", **params}) if p.param in ("noise_level",
                                                                                               "pipeline")]

    (problem,) = problems(noise_level=500)
    assert "SD x4 upscaler's (0-350)" in problem.message
    assert problems(noise_level=350) == []
    (problem,) = problems(pipeline="unclip")
    assert "only unCLIP models run as unclip" in problem.message
    # A txt2img model's base image does not depend on noise_level; an unCLIP model's does.
    defaults = {**Registry().defaults(), "prompt": "a red square"}
    assert backend._base_key({**defaults, "noise_level": 10}) == backend._base_key({**defaults, "noise_level": 50})
    unclip_cell = {**defaults, **cell().params}
    assert backend._base_key({**unclip_cell, "noise_level": 10}) != backend._base_key({**unclip_cell,
                                                                                       "noise_level": 50})
    # ...and not on the denoising strength, which it does not read.
    assert backend._base_key({**unclip_cell, "denoise": 0.2}) == backend._base_key({**unclip_cell, "denoise": 0.9})


@pytest.mark.parametrize(("axis", "words"), [
    ("noise_level: 0, 300", ["set init_image", "tiny-unclip"]),
    ("noise_level: 0, 1000", ["no-image.yaml:4", "noise_level must be >= 0, <= 999, got 1000"]),
])
def test_a_bad_variation_grid_stops_before_any_model_loads(folder, tmp_path, monkeypatch, axis, words):
    from gridgen.backends.sd import render

    monkeypatch.setattr(render, "load_components", lambda *a: pytest.fail("a model was loaded"))
    spec = write_spec(folder, f"""
        grid:
          params: {{model: tiny-unclip, steps: 2}}
        axes:
          {axis}
        """, name="no-image.yaml")
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    for word in words:
        assert word in str(caught.value)
