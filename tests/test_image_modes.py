"""img2img and inpaint: image inputs validated before loading, agreement with diffusers' pipelines, paste back,
crops around the mask, and batching of cells with different images and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.images import masks as mask_ops
from gridgen.errors import SpecError
from gridgen.params import Registry
from gridgen.runner import RunOptions, execute, prepare
from tests import tiny_models
from tests.spec_helpers import write_spec


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth color gradients with a soft pattern, different per seed."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / (4 + seed)) * np.cos(y / 6)], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def rectangle_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def build_inpaint_folder(folder):
    """The gridgen-tiny text encoder and VAE with a random 9-channel UNet, saved as an inpainting pipeline."""
    from diffusers import StableDiffusionInpaintPipeline

    StableDiffusionInpaintPipeline(**tiny_models.tiny_parts(9), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with images, masks, a corrupt file and a tiny random inpainting model."""
    root = tmp_path_factory.mktemp("modes")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    picture(40, 48).save(root / "odd.png")
    picture(96, 64).save(root / "wide.png")
    rectangle_mask((64, 64), (16, 20, 40, 44)).save(root / "mask.png")
    rectangle_mask((64, 64), (0, 0, 24, 24)).save(root / "corner.png")
    rectangle_mask((96, 64), (60, 10, 76, 30)).save(root / "wide-mask.png")
    rectangle_mask((32, 32), (0, 0, 8, 8)).save(root / "small-mask.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    build_inpaint_folder(root / "tiny-inpaint")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 4, "sampler": "Euler", "cfg_scale": 5.0,
            "mask_blur": 0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def defaults(**params) -> dict:
    return {**Registry().defaults(), "prompt": "a red square", "seed": 1, "steps": 4, "sampler": "Euler",
            "cfg_scale": 5.0, **params}


# Validation, before any model loads


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"init_image": "missing.png"}, "init_image", ["missing.png", "no such file", "relative to the spec file"]),
    ({"init_image": "broken.png"}, "init_image", ["broken.png", "cannot decode"]),
    ({"init_image": "init.png", "mask": "small-mask.png"}, "mask", ["small-mask.png", "32x32", "64x64"]),
    ({"mask": "mask.png"}, "mask", ["init_image is not"]),
    ({"model": "tiny-inpaint"}, "model", ["inpainting model", "mask"]),
])
def test_bad_image_inputs_are_problems_naming_the_file(backend, params, param, words):
    problems = [p for p in backend.validate(params) if p.param == param]
    assert problems, backend.validate(params)
    for word in words:
        assert word in problems[0].message


def test_image_problems_stop_the_run_before_any_model_loads(folder, tmp_path, monkeypatch):
    from gridgen.backends.sd import render

    monkeypatch.setattr(render, "load_components", lambda *a: pytest.fail("a model was loaded"))
    spec = write_spec(folder, """
        grid:
          params: {model: gridgen-tiny, steps: 2, init_image: init.png}
        axes:
          mask: mask.png, small-mask.png
        """, name="bad-mask.yaml")
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    assert "small-mask.png" in str(caught.value) and "the size of its init image" in str(caught.value)


def test_inpainting_models_pass_model_checks(backend):
    assert backend.validate({"model": "tiny-inpaint", "init_image": "init.png", "mask": "mask.png"}) == []


# img2img


def test_img2img_matches_diffusers_img2img_pipeline(backend):
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    (ours,) = backend.render([cell(init_image="init.png", denoise=0.6, negative_prompt="blurry")])
    parts = backend._components
    pipe = StableDiffusionImg2ImgPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a red square", image=picture(64, 64), strength=0.6, num_inference_steps=4, guidance_scale=5.0,
                  negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(1),
                  output_type="np").images[0]
    difference = np.abs(pixels(ours.image) - theirs * 255)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from diffusers' StableDiffusionImg2ImgPipeline"


def test_img2img_keeps_the_init_image_size_and_denoise_sets_how_much_changes(backend):
    def render(denoise):
        (result,) = backend.render([cell(init_image="odd.png", denoise=denoise)])
        return result.image

    assert render(0.5).size == (40, 48)
    source = pixels(picture(40, 48))
    changes = [np.abs(pixels(render(d)) - source).mean() for d in (0.0, 0.5, 1.0)]
    assert changes[0] < changes[1] < changes[2], changes
    (sized,) = backend.render([cell(init_image="odd.png", width=32, height=32)])
    assert sized.image.size == (32, 32)  # width/height given: the init image is resized to them


# inpaint


def test_inpaint_model_matches_diffusers_inpaint_pipeline_and_keeps_the_rest(backend, folder):
    from diffusers import StableDiffusionInpaintPipeline

    for denoise in (1.0, 0.7):
        (ours,) = backend.render([cell(model="tiny-inpaint", init_image="init.png", mask="mask.png",
                                       denoise=denoise)])
        pipe = StableDiffusionInpaintPipeline.from_pretrained(folder / "tiny-inpaint")
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe("a red square", image=picture(64, 64), mask_image=Image.open(folder / "mask.png"),
                      strength=denoise, num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                      generator=torch.Generator("cpu").manual_seed(1), output_type="np").images[0] * 255
        inside = np.asarray(Image.open(folder / "mask.png")) > 0
        difference = np.abs(pixels(ours.image) - theirs)[inside]
        assert difference.max() <= 2, f"{denoise}: up to {difference.max()}/255 from StableDiffusionInpaintPipeline"
        assert np.array_equal(pixels(ours.image)[~inside], pixels(picture(64, 64))[~inside])
        assert np.abs(pixels(ours.image) - pixels(picture(64, 64)))[inside].mean() > 5


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DDIM"])
def test_txt2img_model_inpaints_as_diffusers_inpaint_pipeline_does(backend, folder, sampler):
    from diffusers import StableDiffusionInpaintPipeline

    from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice

    source = pixels(picture(64, 64))
    inside = np.asarray(Image.open(folder / "mask.png")) > 0
    (ours,) = backend.render([cell(init_image="init.png", mask="mask.png", denoise=0.8, sampler=sampler)])
    parts = backend._components
    pipe = StableDiffusionInpaintPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=make_scheduler(scheduler_choice(sampler, "automatic"), parts.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a red square", image=picture(64, 64), mask_image=Image.open(folder / "mask.png"), strength=0.8,
                  num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                  generator=torch.Generator("cpu").manual_seed(1), output_type="np").images[0] * 255
    difference = np.abs(pixels(ours.image) - theirs)[inside]
    assert difference.max() <= 2, f"up to {difference.max()}/255 from StableDiffusionInpaintPipeline (4 channels)"
    assert np.array_equal(pixels(ours.image)[~inside], source[~inside])
    assert np.abs(pixels(ours.image) - source)[inside].mean() > 5


def test_mask_blur_softens_only_the_edge(backend, folder):
    source = pixels(picture(64, 64))
    inside = np.asarray(Image.open(folder / "mask.png")) > 0
    (soft,) = backend.render([cell(init_image="init.png", mask="mask.png", denoise=0.8, mask_blur=3)])
    reach = np.asarray(mask_ops.dilate(Image.open(folder / "mask.png"), 12)) > 0
    assert np.array_equal(pixels(soft.image)[~reach], source[~reach])  # far from the mask: untouched
    edge = reach & ~inside
    assert np.abs(pixels(soft.image) - source)[edge].max() > 0  # the blur reaches past the sharp edge


def test_inpaint_full_res_redraws_the_crop_at_the_model_size_and_pastes_it_back(backend, folder, monkeypatch):
    from gridgen.backends.sd.kinds import edit

    seen = []
    original = edit.denoise
    monkeypatch.setattr(edit, "denoise", lambda parts, prepared, *rest, **text: seen.append(prepared.pixels.shape)
                        or original(parts, prepared, *rest, **text))
    (result,) = backend.render([cell(init_image="wide.png", mask="wide-mask.png", inpaint_full_res=True,
                                     padding_mask_crop=4, denoise=0.9)])
    assert seen == [(1, 3, 64, 64)]  # the crop, at the model's native size, not the 96x64 image
    assert result.image.size == (96, 64)
    inside = np.asarray(Image.open(folder / "wide-mask.png")) > 0
    source = pixels(picture(96, 64))
    assert np.array_equal(pixels(result.image)[~inside], source[~inside])
    assert np.abs(pixels(result.image) - source)[inside].mean() > 5


def test_crop_region_pads_and_matches_the_aspect():
    mask = rectangle_mask((100, 80), (40, 30, 50, 40))
    assert mask_ops.crop_region(mask, 5, 1.0) == (35, 25, 55, 45)
    x1, y1, x2, y2 = mask_ops.crop_region(mask, 5, 2.0)
    assert (x2 - x1, y2 - y1) == (40, 20) and x1 <= 35 and x2 >= 55
    assert mask_ops.crop_region(rectangle_mask((100, 80), (0, 0, 10, 10)), 5, 1.0) == (0, 0, 15, 15)


# Batching


def test_cells_with_different_images_and_masks_share_a_batch_and_denoise_splits_it(folder, tmp_path, monkeypatch):
    spec = write_spec(folder, """
        grid:
          params: {model: tiny-inpaint, steps: 2, sampler: Euler, mask_blur: 0}
        axes:
          init_image: init.png, other.png
          mask: mask.png, corner.png
          denoise: 0.5, 1.0
        """, name="batch.yaml")
    batches: list[int] = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: batches.append(len(batch)) or
                        original(self, batch))
    options = RunOptions(out=tmp_path / "out", batch_size=8)
    execute(prepare(spec, options), options, show_progress=False)
    assert sorted(batches) == [4, 4]  # one batch per denoise strength, each with every image and mask
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    out = {e["key"]: pixels(Image.open(tmp_path / "out" / e["file"])) for e in journal}
    assert len(out) == 8
    corner = np.asarray(Image.open(folder / "corner.png")) > 0
    # Each cell kept its own image outside its own mask.
    assert np.array_equal(out["other_png/corner_png/0_5"][~corner], pixels(picture(64, 64, 3))[~corner])
    full = next(image for key, image in out.items() if key.startswith("init_png/corner_png/") and "0_5" not in key)
    assert np.array_equal(full[~corner], pixels(picture(64, 64))[~corner])
    # A cell renders the same alone as in its batch.
    backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    (alone,) = backend.render([cell(model="tiny-inpaint", init_image="other.png", mask="corner.png", denoise=0.5,
                                    steps=2, cfg_scale=7.0, prompt="", seed=1)])
    backend.close()
    assert np.abs(pixels(alone.image) - out["other_png/corner_png/0_5"]).max() <= 1


def test_the_shipped_tiny_inpaint_model_removes_a_shape(tmp_path):
    from gridgen.tiny import data as shapes

    sample = shapes.draw("red", "circle", "white", 20, 12, 24)
    Image.fromarray(sample.image).save(tmp_path / "shape.png")
    mask = mask_ops.dilate(Image.fromarray(sample.mask.astype(np.uint8) * 255), 4)
    mask.save(tmp_path / "shape-mask.png")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    (result,) = backend.render([cell(model="gridgen-tiny-inpaint", init_image="shape.png", mask="shape-mask.png",
                                     denoise=1.0, steps=20, prompt=shapes.background_caption("white"))])
    backend.close()
    inside = np.asarray(mask) > 0
    assert np.abs(pixels(result.image)[inside] - 255).mean() < 40  # the red circle is gone, white in its place


def test_inpainting_fill_changes_only_what_the_masked_part_starts_from(backend, folder):
    inside = np.asarray(Image.open(folder / "mask.png")) > 0
    source = pixels(picture(64, 64))
    fills = ["original", "fill", "latent_noise", "latent_nothing"]
    cells = [cell(key=fill, init_image="init.png", mask="mask.png", denoise=0.6, inpainting_fill=fill)
             for fill in fills]
    together = {result.cell.key: pixels(result.image) for result in backend.render(cells)}  # one batch, mixed
    (alone,) = backend.render([cell(init_image="init.png", mask="mask.png", denoise=0.6, inpainting_fill="fill")])
    assert np.abs(together["fill"] - pixels(alone.image)).max() <= 1
    (default,) = backend.render([cell(init_image="init.png", mask="mask.png", denoise=0.6)])
    assert np.abs(together["original"] - pixels(default.image)).max() <= 1  # original is the default
    for fill in fills:
        assert np.array_equal(together[fill][~inside], source[~inside]), fill
    for other in fills[1:]:
        assert np.abs(together[other] - together["original"])[inside].mean() > 2, other
