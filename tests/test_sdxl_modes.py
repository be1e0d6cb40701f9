"""SDXL beyond txt2img: img2img, hires fix and inpaint (4- and 9-channel UNets, folders and single files, SAM
edits) against diffusers' SDXL pipelines, long prompts in 75-token chunks for both text encoders, and an SDXL
img2img grid run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.text.clip import PromptEncoder
from gridgen.runner import RunOptions, execute, prepare
from tests import tiny_models
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels, rectangle_mask

PROMPT, NEGATIVE = "a red cat", "blurry"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder with an image, two masks, a tiny SDXL model and a tiny 9-channel SDXL inpainting model (as a
    folder and as a single file, with a config root whose families describe them)."""
    root = tmp_path_factory.mktemp("sdxl")
    with pytest.MonkeyPatch.context() as patch:  # the CLIP vocabulary files go to a cache of this module's own
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        base = tiny_models.build(root / "xl", "sdxl", seed=3)
        inpaint = tiny_models.build(root / "xl-inpaint", "sdxl-inpaint", in_channels=9, seed=4)
    inpaint.write(root / "xl-inpaint.safetensors")
    tiny_models.config_root(root / "configs", [base, inpaint])
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    rectangle_mask((64, 64), (16, 20, 40, 44)).save(root / "mask.png")
    rectangle_mask((64, 64), (0, 0, 24, 24)).save(root / "corner.png")
    return root


@pytest.fixture()
def backend(folder):
    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    yield instance
    instance.close()


def cell(key: str = "0", **params) -> Cell:
    base = {"model": "xl", "prompt": PROMPT, "negative_prompt": NEGATIVE, "seed": 1, "steps": 4,
            "sampler": "Euler", "cfg_scale": 5.0, "mask_blur": 0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def render(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return pixels(result.image)


def reference(pipeline_class, model, **call) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler

    pipe = pipeline_class.from_pretrained(model, add_watermarker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
                 generator=torch.Generator("cpu").manual_seed(1), output_type="np", **call).images[0]
    return image * 255


# img2img and inpaint


def test_sdxl_img2img_matches_diffusers_sdxl_img2img_pipeline(backend, folder):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    ours = render(backend, init_image="init.png", denoise=0.6)
    theirs = reference(StableDiffusionXLImg2ImgPipeline, folder / "xl", image=picture(64, 64), strength=0.6)
    difference = np.abs(ours - theirs)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from StableDiffusionXLImg2ImgPipeline"
    assert np.abs(ours - pixels(picture(64, 64))).mean() > 5  # it did redraw


def test_sdxl_hires_fix_is_diffusers_sdxl_img2img_of_the_enlarged_image(backend, folder):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    base = Image.fromarray(render(backend).astype(np.uint8))
    ours = render(backend, upscaler="hires:lanczos", upscale_by=2, hires_denoise=0.5)
    enlarged = base.resize((base.width * 2, base.height * 2), Image.Resampling.LANCZOS)
    theirs = reference(StableDiffusionXLImg2ImgPipeline, folder / "xl", image=enlarged, strength=0.5)
    difference = np.abs(ours - theirs)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from StableDiffusionXLImg2ImgPipeline"


@pytest.mark.parametrize(("model", "denoise"), [("xl", 1.0), ("xl", 0.7), ("xl-inpaint", 1.0), ("xl-inpaint", 0.7)])
def test_sdxl_inpaint_matches_diffusers_sdxl_inpaint_pipeline_and_keeps_the_rest(backend, folder, model, denoise):
    from diffusers import StableDiffusionXLInpaintPipeline

    ours = render(backend, model=model, init_image="init.png", mask="mask.png", denoise=denoise)
    theirs = reference(StableDiffusionXLInpaintPipeline, folder / model, image=picture(64, 64),
                       mask_image=Image.open(folder / "mask.png"), strength=denoise, height=64, width=64)
    inside = np.asarray(Image.open(folder / "mask.png")) > 0
    difference = np.abs(ours - theirs)[inside]
    assert difference.max() <= 2, f"up to {difference.max()}/255 from StableDiffusionXLInpaintPipeline"
    source = pixels(picture(64, 64))
    assert np.array_equal(ours[~inside], source[~inside])  # pasted back: untouched outside the mask
    assert np.abs(ours - source)[inside].mean() > 5


def test_sdxl_inpaint_cells_render_alike_alone_and_in_one_batch(backend):
    variants = [{"init_image": "init.png", "mask": "mask.png", "seed": 1},
                {"init_image": "other.png", "mask": "corner.png", "seed": 2, "cfg_scale": 1.0},
                {"init_image": "init.png", "mask": "corner.png", "seed": 3, "prompt": " ".join(["cat"] * 90)}]
    cells = [cell(str(i), model="xl-inpaint", denoise=0.8, **params) for i, params in enumerate(variants)]
    assert len({backend.batch_key(one.params) for one in cells}) == 1
    together = {result.cell.key: pixels(result.image) for result in backend.render(cells)}
    for one in cells:
        (alone,) = backend.render([one])
        assert np.abs(pixels(alone.image) - together[one.key]).max() <= 1, one.params


@pytest.fixture()
def tiny_configs(folder, monkeypatch):
    """Single files are configured from the tiny models' config root; memoised lookups are forgotten around it."""
    from gridgen.backends.sd.models import families, locate

    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    monkeypatch.setattr(families, "CONFIG_ROOT", folder / "configs")
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()
    yield
    for cached in (locate.resolve_model, locate.read_model_info):
        cached.cache_clear()


def test_an_sdxl_inpainting_single_file_renders_as_its_folder(backend, folder, tiny_configs):
    from gridgen.backends.sd.models import locate

    info = locate.read_model_info(folder / "xl-inpaint.safetensors")
    assert (info.config.name, info.in_channels, info.sdxl) == ("sdxl-inpaint", 9, True)
    edit = {"init_image": "init.png", "mask": "mask.png", "denoise": 0.8}
    single = render(backend, model="xl-inpaint.safetensors", **edit)
    assert np.abs(single - render(backend, model="xl-inpaint", **edit)).max() <= 1


@pytest.mark.parametrize("inpainter", ["xl-inpaint", "xl-inpaint.safetensors"])
def test_an_sdxl_inpainter_redraws_a_sam_mask_as_an_sdxl_inpaint_cell_does(backend, folder, monkeypatch, tiny_configs,
                                                                           inpainter):
    from gridgen.backends.sd.stages import segment

    square = np.asarray(Image.open(folder / "mask.png")) > 0
    monkeypatch.setattr(segment, "segment", lambda sam, image, prompt: (square[None], np.array([0.9], np.float32)))
    common = {"model": "xl", "init_image": "init.png", "denoise": 0.9}
    (edited,) = backend.render([cell(**common, sam_model="gridgen-tiny-sam", sam_prompt="point 28 32", sam_mask="0",
                                     dilate=0, inpaint_mode="fill", inpainter=inpainter)])
    assert np.array_equal(np.asarray(edited.files["mask"]) > 0, square)
    inpainted = render(backend, **{**common, "model": "xl-inpaint"}, mask="mask.png")
    assert np.abs(pixels(edited.image) - inpainted).max() <= 1


def test_a_9_channel_sdxl_model_is_an_sdxl_inpaint_model(backend):
    assert backend.validate({"model": "xl-inpaint", "init_image": "init.png", "mask": "mask.png"}) == []
    (problem,) = [p for p in backend.validate({"model": "xl-inpaint"}) if p.param == "model"]
    assert "inpainting model (a 9-channel UNet)" in problem.message


# Long prompts


@pytest.fixture()
def loaded(folder):
    from gridgen.params import Registry

    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    instance._ensure_loaded({**Registry().defaults(), "model": "xl"})
    yield instance.prompts
    instance.close()


def test_a_short_sdxl_prompt_is_encoded_as_diffusers_encodes_it(loaded, folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder / "xl", add_watermarker=False)
    context, _, pooled, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert torch.allclose(loaded.encode([(PROMPT, 1)])[0], context[0], atol=1e-5)
    assert torch.allclose(loaded.pooled([(PROMPT, 1)])[0], pooled[0], atol=1e-5)


def test_a_150_token_sdxl_prompt_is_two_chunks_whose_first_is_its_first_75_tokens(loaded):
    first, rest = " ".join(["cat"] * 75), " ".join(["dog"] * 75)
    long = f"{first} {rest}"
    for encoder in loaded.chunkers:  # both encoders chunk alike: 2 x (75 tokens + start and end token)
        rows = encoder.token_rows([long])
        assert rows.counts == [2] and rows.ids.shape == (2, 77)
    (context,), (short,) = loaded.encode([(long, 1)]), loaded.encode([(first, 1)])
    widths = [encoder.text_encoder.config.hidden_size for encoder in loaded.chunkers]
    assert context.shape == (154, sum(widths))
    assert torch.allclose(context[:77], short, atol=1e-6)
    assert torch.allclose(context[77:], loaded.encode([(rest, 1)])[0], atol=1e-6)
    # The pooled embedding is the first chunk's, as A1111 and ComfyUI take it.
    assert torch.allclose(loaded.pooled([(long, 1)]), loaded.pooled([(first, 1)]), atol=1e-6)
    assert not torch.allclose(loaded.pooled([(long, 1)]), loaded.pooled([(rest, 1)]), atol=1e-3)


def test_break_and_weights_reach_both_sdxl_encoders(loaded):
    (broken,) = loaded.encode([("a red BREAK cat", 1)])
    parts = torch.cat(loaded.encode([("a red", 1), ("cat", 1)]))
    assert broken.shape[0] == 154 and torch.allclose(broken, parts, atol=1e-6)
    (plain,), (weighted,) = loaded.encode([("a red cat", 1)]), loaded.encode([("a (red:1.5) cat", 1)])
    width = loaded.chunkers[0].text_encoder.config.hidden_size
    for half in (slice(None, width), slice(width, None)):  # each encoder's own states are weighted
        assert not torch.allclose(plain[:, half], weighted[:, half])
    assert torch.equal(loaded.encode([("(a red cat:1)", 1)])[0], plain)


def test_a_batch_of_short_and_long_sdxl_prompts_renders_each_cell_as_alone(backend):
    first = " ".join(["cat", "dog", "red", "blue", "green"] * 15)
    long = f"{first} {' '.join(['a house by the sea'] * 15)}"
    variants = [{"prompt": PROMPT, "seed": 1},
                {"prompt": long, "seed": 2},
                {"prompt": "a dog", "negative_prompt": long + " BREAK green", "seed": 3, "cfg_scale": 3.0},
                {"prompt": long, "seed": 4, "cfg_scale": 1.0}]
    cells = [cell(str(i), steps=3, **params) for i, params in enumerate(variants)]
    together = {result.cell.key: pixels(result.image) for result in backend.render(cells)}
    for one in cells:
        (alone,) = backend.render([one])
        assert np.abs(pixels(alone.image) - together[one.key]).max() <= 1, one.params
    # The words past the first 75 tokens count: they change the image.
    assert np.abs(together["1"] - render(backend, prompt=first, seed=2, steps=3)).mean() > 1


def test_sd2_prompts_end_before_their_padding_as_diffusers_tokenizes_them(tmp_path, monkeypatch):
    """SD 2.x, like SDXL's second encoder, pads with `!`: the end token follows the text, not the padding."""
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny_models.build(tmp_path / "sd2", "sd2-v", seed=2)
    pipe = StableDiffusionPipeline.from_pretrained(model.folder)
    assert pipe.tokenizer.pad_token_id != pipe.tokenizer.eos_token_id
    context, _ = pipe.encode_prompt(PROMPT, "cpu", 1, do_classifier_free_guidance=False)
    assert torch.allclose(PromptEncoder(pipe.tokenizer, pipe.text_encoder).encode([(PROMPT, 1)])[0], context[0],
                          atol=1e-5)


# A grid run


def test_gridgen_run_renders_an_sdxl_img2img_grid(folder, tmp_path):
    spec = write_spec(folder, """
        grid:
          title: sdxl img2img
          params: {model: xl, steps: 3, sampler: Euler, cfg_scale: 5, seed: 1, init_image: init.png,
                   negative_prompt: blurry}
        axes:
          prompt: a red cat, a blue dog
          denoise: 0.4, 0.8
        """, name="sdxl-img2img.yaml")
    options = RunOptions(out=tmp_path / "out", device="cpu", batch_size=4)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    images = {entry["key"]: pixels(Image.open(tmp_path / "out" / entry["file"])) for entry in journal}
    assert sorted(images) == ["a_blue_dog/0_4", "a_blue_dog/0_8", "a_red_cat/0_4", "a_red_cat/0_8"]
    assert all(image.shape == (64, 64, 3) for image in images.values())
    backend = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu", cache_bytes=0))
    alone = render(backend, prompt="a blue dog", init_image="init.png", denoise=0.8, steps=3)
    backend.close()
    assert np.abs(alone - images["a_blue_dog/0_8"]).max() <= 1
    source = pixels(picture(64, 64))
    assert np.abs(images["a_blue_dog/0_8"] - source).mean() > np.abs(images["a_blue_dog/0_4"] - source).mean()
