"""instruct-pix2pix: the three-way guidance against diffusers' own pipeline, its shortcuts, batching of mixed
cells, a grid run over image_cfg_scale, single-file checkpoints, and the problems validation reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise import guidance
from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice
from gridgen.backends.sd.models import families, locate
from gridgen.errors import SpecError
from gridgen.metadata import read_metadata
from gridgen.params import Registry, coerce
from gridgen.runner import RunOptions, execute, prepare
from tests import tiny_models
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels


def build_ip2p_folder(folder):
    """The gridgen-tiny text encoder and VAE with a random 8-channel UNet, saved as an instruct-pix2pix pipeline."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    StableDiffusionInstructPix2PixPipeline(**tiny_models.tiny_parts(8), safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with two init images, a mask and a tiny random instruct-pix2pix model."""
    root = tmp_path_factory.mktemp("ip2p")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    Image.new("L", (64, 64), 255).save(root / "mask.png")
    build_ip2p_folder(root / "tiny-ip2p")
    return root


@pytest.fixture(scope="module")
def vocab_cache(tmp_path_factory):
    """The CLIP vocabulary files the LDM-layout models are tokenized with, written once, away from the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture()
def backend(folder):
    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    yield instance
    instance.close()


def cell(key: str = "0", **params) -> Cell:
    base = {"model": "tiny-ip2p", "init_image": "init.png", "prompt": "make it red", "seed": 1, "steps": 4,
            "sampler": "Euler", "cfg_scale": 5.0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def messages(problems, param):
    return [p.message for p in problems if p.param == param]


# Agreement with diffusers


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
def test_matches_diffusers_instruct_pix2pix_pipeline(backend, sampler):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    # General scales, then the two shortcuts: image scale 1 (no unconditional rows), equal scales (no image-only).
    for cfg, image_cfg in ((5.0, 1.5), (3.0, 1.0), (2.0, 2.0)):
        (ours,) = backend.render([cell(sampler=sampler, cfg_scale=cfg, image_cfg_scale=image_cfg,
                                       negative_prompt="blurry")])
        parts = backend._components
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            scheduler=make_scheduler(scheduler_choice(sampler, "automatic"), parts.scheduler_config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe("make it red", image=picture(64, 64), num_inference_steps=4, guidance_scale=cfg,
                      image_guidance_scale=image_cfg, negative_prompt="blurry",
                      generator=torch.Generator("cpu").manual_seed(1), output_type="np").images[0] * 255
        difference = np.abs(pixels(ours.image) - theirs).mean()
        assert difference <= 2, f"{sampler} {cfg}/{image_cfg}: {difference}/255 from the diffusers pipeline"
        assert np.abs(pixels(ours.image) - pixels(picture(64, 64))).mean() > 5  # it did redraw the image


def test_sdxl_matches_diffusers_sdxl_instruct_pix2pix_pipeline(tmp_path, vocab_cache):
    from diffusers import StableDiffusionXLInstructPix2PixPipeline

    model = tiny_models.build(tmp_path / "sdxl-ip2p", "sdxl", in_channels=8, seed=3)
    picture(64, 64).save(tmp_path / "init.png")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    try:
        params = {"model": str(model.folder), "sampler": "DPM++ 2M", "cfg_scale": 4.0, "image_cfg_scale": 1.5,
                  "negative_prompt": "blurry"}
        assert backend.validate(cell(**params).params) == []
        (ours,) = backend.render([cell(**params)])
        parts = backend._components
        pipe = StableDiffusionXLInstructPix2PixPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
            tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet,
            scheduler=make_scheduler(scheduler_choice("DPM++ 2M", "automatic"), parts.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe("make it red", image=picture(64, 64), num_inference_steps=4, guidance_scale=4.0,
                      image_guidance_scale=1.5, negative_prompt="blurry", height=64, width=64,
                      generator=torch.Generator("cpu").manual_seed(1), output_type="np").images[0] * 255
        difference = np.abs(pixels(ours.image) - theirs).mean()
        assert difference <= 2, f"{difference}/255 from diffusers' SDXL instruct-pix2pix pipeline"
    finally:
        backend.close()


def test_image_guidance_runs_only_the_predictions_that_weigh_and_keeps_the_formula():
    """A stand-in UNet whose output depends on every input: the mixed result is diffusers' formula at each
    sample's scales, and the UNet sees only the rows whose weight is not zero."""
    seen = []

    class Unet:
        dtype = torch.float32

        def __call__(self, x, t, encoder_hidden_states):
            seen.append(x.shape[0])
            signal = x[:, :4] * 0.5 + x[:, 4:].sin() + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
            return type("Output", (), {"sample": signal})()

    torch.manual_seed(0)
    scales, image_scales = [5.0, 3.0, 2.0, 1.0, 1.0, 1.0], [1.5, 1.0, 2.0, 1.0, 2.5, 0.0]
    x, image = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    cond, uncond = torch.randn(6, 3, 16), torch.randn(6, 3, 16)
    zeros = torch.zeros_like(image)
    denoise = guidance.guided_denoiser(Unet(), cond, uncond, scales, image=image, image_scales=image_scales,
                                       image_uncond=zeros)
    eps = denoise(x, torch.tensor(10))
    # Image-only rows where the two scales differ (0, 1, 4, 5); unconditional ones where image scale != 1 (0, 2, 4, 5).
    assert seen == [6 + 4 + 4]

    def unet(rows_x, rows_image, context):
        return Unet()(torch.cat([rows_x, rows_image], dim=1), None, context).sample

    text, image_only, nothing = unet(x, image, cond), unet(x, image, uncond), unet(x, zeros, uncond)
    g = torch.tensor(scales).view(-1, 1, 1, 1)
    s = torch.tensor(image_scales).view(-1, 1, 1, 1)
    expected = nothing + g * (text - image_only) + s * (image_only - nothing)
    assert torch.allclose(eps, expected, atol=1e-5)

    seen.clear()
    plain = guidance.guided_denoiser(Unet(), cond, uncond, scales, image=image)(x, torch.tensor(10))
    assert seen == [6 + 3]  # without image scales: plain CFG, unconditional rows only where cfg != 1
    assert torch.allclose(plain, image_only + g * (text - image_only), atol=1e-5)


# Batching


def test_mixed_cells_share_one_batch_and_render_as_alone(backend, monkeypatch):
    cells = [cell("a"), cell("b", prompt="turn it blue", seed=7, cfg_scale=3.0, image_cfg_scale=1.0),
             cell("c", init_image="other.png", seed=2, image_cfg_scale=2.5, negative_prompt="dark"),
             cell("d", init_image="other.png", prompt="", cfg_scale=1.0, image_cfg_scale=1.0, seed=3)]
    batches: list[int] = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: batches.append(len(batch)) or
                        original(self, batch))
    results = list(backend.render(cells))
    together = {result.cell.key: pixels(result.image) for result in results}
    assert batches == [4]
    assert [result.metadata["image_cfg_scale"] for result in results] == [1.5, 1.0, 2.5, 1.0]  # 1.5 by default
    for one in cells:
        (alone,) = backend.render([one])
        assert np.abs(pixels(alone.image) - together[one.key]).max() <= 1, one.key
    assert np.abs(together["a"] - together["c"]).mean() > 2  # another image and scale gives another edit


# A grid run


def test_gridgen_run_renders_an_image_cfg_scale_axis_and_ignores_denoise(folder, tmp_path, monkeypatch):
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-ip2p, init_image: init.png, prompt: make it red, steps: 3, sampler: Euler,
                   cfg_scale: 4}
        axes:
          Image CFG Scale: 1, 2.5
          denoise: 0.5, 1
        """, name="ip2p.yaml")
    batches: list[int] = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: batches.append(len(batch)) or
                        original(self, batch))
    options = RunOptions(out=tmp_path / "out", batch_size=8)
    execute(prepare(spec, options), options, show_progress=False)
    assert batches == [2]  # one denoising batch; cells differing only in denoise share its images
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    out = {e["key"]: pixels(Image.open(tmp_path / "out" / e["file"])) for e in journal}
    assert sorted(out) == ["1/0_5", "1/1", "2_5/0_5", "2_5/1"]
    assert np.array_equal(out["1/0_5"], out["1/1"])
    assert np.abs(out["1/0_5"] - out["2_5/0_5"]).mean() > 1
    assert {e["params"]["image_cfg_scale"] for e in journal} == {1.0, 2.5}
    file = next(e["file"] for e in journal if e["key"] == "2_5/1")
    assert "CFG scale: 4, Image CFG scale: 2.5," in read_metadata(tmp_path / "out" / file)["parameters"]


def test_the_image_cfg_axis_library_teaches_every_value_and_validates(folder, tmp_path):
    spec = write_spec(folder, """
        include: axes/image_cfg.yaml
        grid:
          params: {model: tiny-ip2p, init_image: init.png, steps: 2}
        """, name="image-cfg-library.yaml")
    prepared = prepare(spec, RunOptions(out=tmp_path / "out"))  # validates every cell: a bad value fails here
    (axis,) = prepared.plan.spec.axes
    assert axis.id == "image_cfg_scale" and axis.default == "1_5" and len(axis.description) > 200
    assert [value.params["image_cfg_scale"] for value in axis.values] == [1.0, 1.2, 1.5, 2.0, 3.0]
    for value in axis.values:
        assert value.title and len(value.description) > 80, value.key


# Single files


@pytest.mark.parametrize("family", ["sd1-ip2p", "sdxl-ip2p"])
def test_an_8_channel_single_file_loads_and_renders_as_its_folder(tmp_path, monkeypatch, vocab_cache, family):
    model = tiny_models.build(tmp_path / "folder", family, in_channels=8, seed=4)
    monkeypatch.setattr(families, "CONFIG_ROOT", tiny_models.config_root(tmp_path / "configs", [model]))
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()
    path = model.write(tmp_path / "ip2p.safetensors")
    picture(32, 32).save(tmp_path / "init.png")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    try:
        assert locate.read_model_info(path).config == families.CONFIG_ROOT / family
        renders = []
        for name in (str(path), str(model.folder)):
            params = {"model": name, "pipeline": "instruct-pix2pix", "image_cfg_scale": 2.0}
            assert backend.validate(cell(**params).params) == []
            (result,) = backend.render([cell(**params)])
            renders.append(pixels(result.image))
        assert np.abs(renders[0] - renders[1]).max() <= 1
    finally:
        backend.close()
        for cached in (locate.resolve_model, locate.read_model_info):
            cached.cache_clear()


# Validation


def test_an_ip2p_model_needs_init_image_and_refuses_what_it_cannot_do(backend):
    for params in ({"init_image": None}, {"init_image": None, "sam_prompt": "point 5 5"}):
        (message,) = messages(backend.validate(cell(**params).params), "init_image")
        assert "instruct-pix2pix model" in message and "give init_image" in message
    (message,) = messages(backend.validate(cell(mask="mask.png").params), "mask")
    assert "reads no mask" in message
    (message,) = messages(backend.validate(cell(upscaler="hires:lanczos").params), "upscaler")
    assert "hires:lanczos" in message and "img2img" in message
    assert backend.validate(cell(upscaler="lanczos", upscale_by=2).params) == []
    assert backend.validate(cell(pipeline="instruct-pix2pix", image_cfg_scale=0.0).params) == []


def test_image_cfg_scale_on_a_txt2img_model_names_both(backend):
    problems = backend.validate(cell(model="gridgen-tiny", image_cfg_scale=1.5).params)
    (message,) = messages(problems, "image_cfg_scale")
    assert "image_cfg_scale is for instruct-pix2pix models" in message and "txt2img model" in message
    pipeline = coerce(Registry().lookup("pipeline"), "ip2p")
    (message,) = messages(backend.validate(cell(model="gridgen-tiny", pipeline=pipeline).params), "pipeline")
    assert "needs a 8-channel UNet" in message


def test_a_negative_image_cfg_scale_is_refused_naming_the_param(folder, tmp_path):
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-ip2p, init_image: init.png}
        axes:
          image_cfg_scale: 1.5, -1
        """, name="negative.yaml")
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    assert "image_cfg_scale must be" in str(caught.value) and "-1" in str(caught.value)
