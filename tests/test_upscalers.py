"""The upscaler axis: value parsing, spandrel model files, tiled inference, sizes, the stage cache, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.images.resample import run_model, target_size
from gridgen.backends.sd.stages import upscale_models
from gridgen.backends.sd.stages.tiling import tile_starts
from gridgen.backends.sd.stages.upscalers import X4_DEFAULT_MODEL, parse_upscaler
from gridgen.errors import SpecError
from gridgen.runner import RunOptions, execute, prepare
from gridgen.tiny import TINY_MODEL_DIR
from tests.spec_helpers import write_spec
from tests.tiny_models import build_x4


def _save(module: torch.nn.Module, folder: Path, stem: str) -> tuple[Path, Path]:
    state = {name: tensor.contiguous() for name, tensor in module.state_dict().items()}
    torch.save(state, folder / f"{stem}.pth")
    save_file(state, str(folder / f"{stem}.safetensors"))
    return folder / f"{stem}.pth", folder / f"{stem}.safetensors"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """A small 4x ESRGAN and a 2x Compact with random weights, each as .pth and .safetensors."""
    upscale_models._loader()  # spandrel imports only through gridgen's loader
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    folder = tmp_path_factory.mktemp("upscale_models")
    torch.manual_seed(0)
    esrgan = _save(ESRGAN(num_filters=8, num_blocks=1, scale=4), folder, "esrgan-4x")
    compact = _save(Compact(num_feat=8, num_conv=2, upscale=2), folder, "compact-2x")
    garbage = folder / "not-a-model.pth"
    torch.save({"weight": torch.zeros(3, 3), "something.else": torch.ones(2)}, garbage)
    return {"esrgan": esrgan[0], "esrgan_st": esrgan[1], "compact": compact[0], "compact_st": compact[1],
            "garbage": garbage, "folder": folder}


X4_MAX_NOISE = 100


@pytest.fixture(scope="module")
def x4_folder(model_files) -> Path:
    """A tiny random-weight SD x4 upscaler, saved as a diffusers folder next to the model files."""
    return build_x4(model_files["folder"] / "tiny-x4", X4_MAX_NOISE)


@pytest.fixture()
def backend(model_files):
    instance = DiffusersBackend(BackendContext(spec_dir=model_files["folder"], device="cpu"))
    yield instance
    instance.close()


def _cell(**params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 2, "sampler": "Euler", "width": 32, "height": 32}
    return Cell(index=0, key="0", coords=("0",), params={**base, **params})


def _test_image(width: int, height: int) -> Image.Image:
    """Smooth gradients plus a soft pattern: structure the models respond to, without noise-level detail."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


# Values


@pytest.mark.parametrize(("text", "family", "canonical"), [
    ("Lanczos", "pixel", "lanczos"),
    ("none", "pixel", "none"),
    ("models/4x-UltraSharp.pth", "model", "models/4x-UltraSharp.pth"),
    ("x.SafeTensors", "model", "x.SafeTensors"),
    ("sd-x4", "sd-x4", "sd-x4"),
    ("SD x4: some/folder", "sd-x4", "sd-x4:some/folder"),
    ("Latent (nearest-exact)", "latent", "latent-nearest-exact"),
    ("latent antialiased", "latent", "latent-antialiased"),
    ("hires: Bicubic", "hires", "hires:bicubic"),
    ("hires:models/a.pth", "hires", "hires:models/a.pth"),
    ("SD upscale", "sd-upscale", "sd-upscale"),
])
def test_upscaler_values_parse_to_one_spelling(text, family, canonical):
    parsed = parse_upscaler(text)
    assert (parsed.family, parsed.text) == (family, canonical)


def test_sd_x4_defaults_to_the_stability_model():
    assert parse_upscaler("sd-x4").name == X4_DEFAULT_MODEL


@pytest.mark.parametrize(("text", "expected"), [
    ("lanczoz", "did you mean 'lanczos'"),
    ("latent-bicubik", "did you mean 'latent-bicubic'"),
    ("ultrasharp", "model file path ending in .pth"),
    ("hires", "hires:lanczos"),
    ("hires:latent", "not latent"),
    ("hires:", "nothing after the colon"),
])
def test_bad_upscaler_values_say_what_to_write(text, expected):
    with pytest.raises(ValueError, match="upscaler") as caught:
        parse_upscaler(text)
    assert expected in str(caught.value)


def test_an_unknown_name_is_a_spec_error_before_rendering(tmp_path):
    spec = write_spec(tmp_path, """
        grid:
          params: {model: gridgen-tiny, steps: 2, width: 32, height: 32}
        axes:
          upscaler: lanczos, bicubik
        """)
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    assert "did you mean 'bicubic'" in str(caught.value)
    assert "grid.yaml:4:" in str(caught.value)  # located at the axis line


# spandrel files


@pytest.mark.parametrize(("key", "arch", "scale"), [
    ("esrgan", "ESRGAN", 4), ("esrgan_st", "ESRGAN", 4), ("compact", "RealESRGAN Compact", 2),
    ("compact_st", "RealESRGAN Compact", 2)])
def test_spandrel_identifies_the_fixture_models(model_files, key, arch, scale):
    model = upscale_models.load_upscale_model(model_files[key])
    assert model.architecture.name == arch and model.scale == scale


def test_spandrel_leaves_no_torchvision_stand_in_behind(model_files):
    import importlib.util

    # Other libraries probe for torchvision this way; a leftover stand-in module would make it raise.
    spec = importlib.util.find_spec("torchvision")
    assert spec is None or spec.origin


def test_fp16_only_on_cuda_and_only_where_the_architecture_allows_it(model_files):
    from gridgen.backends.sd.images.resample import model_dtype

    model = upscale_models.load_upscale_model(model_files["esrgan"])
    assert model.supports_half
    assert model_dtype(model, torch.device("cuda")) == torch.float16
    assert model_dtype(model, torch.device("cpu")) == torch.float32


def test_loaded_models_are_cached_by_path_and_mtime(model_files, tmp_path):
    copy = tmp_path / "m.pth"
    copy.write_bytes(model_files["compact"].read_bytes())
    first = upscale_models.load_upscale_model(copy)
    assert upscale_models.load_upscale_model(copy) is first
    copy.write_bytes(model_files["esrgan"].read_bytes())  # a new file under the same name is reread
    assert upscale_models.load_upscale_model(copy).scale == 4


def test_model_files_resolve_against_the_spec_dir_and_models_dir(model_files, tmp_path):
    models = tmp_path / "models"
    (models / "ESRGAN").mkdir(parents=True)
    (models / "ESRGAN" / "mine.pth").write_bytes(model_files["compact"].read_bytes())
    found = upscale_models.resolve_upscaler_file("mine.pth", tmp_path / "spec", models)
    assert found == (models / "ESRGAN" / "mine.pth").resolve()
    with pytest.raises(Exception, match=r"upscaler 'other.pth' not found: looked for .*ESRGAN"):
        upscale_models.resolve_upscaler_file("other.pth", tmp_path / "spec", models)


def test_bad_model_files_are_clear_problems_before_rendering(backend, model_files):
    (problem,) = backend.validate({"upscaler": "not-a-model.pth"})
    assert problem.param == "upscaler" and "not-a-model.pth" in problem.message
    assert "spandrel cannot identify" in problem.message
    (problem,) = backend.validate({"upscaler": "missing.pth"})
    assert "not found" in problem.message and "missing.pth" in problem.message
    (problem,) = backend.validate({"upscaler": "esrgan-4x.pth", "tile_size": 32, "tile_overlap": 32})
    assert problem.param == "tile_overlap"
    assert backend.validate({"upscaler": "esrgan-4x.safetensors"}) == []


# Tiling


def test_tile_starts_cover_the_side_with_the_overlap():
    assert tile_starts(100, 0, 8) == [0] and tile_starts(100, 128, 8) == [0]
    starts = tile_starts(100, 40, 8)
    assert starts[0] == 0 and starts[-1] == 60 and all(b - a == 32 for a, b in zip(starts, starts[1:-1], strict=False))


@pytest.mark.parametrize("key", ["esrgan", "compact"])
def test_tiled_and_untiled_outputs_agree_away_from_the_border(model_files, key):
    model = upscale_models.load_upscale_model(model_files[key])
    image = _test_image(96, 80)
    whole = np.asarray(run_model(model, image, torch.device("cpu"), 0, 0), dtype=np.float32)
    tiles = np.asarray(run_model(model, image, torch.device("cpu"), 40, 16), dtype=np.float32)
    assert whole.shape == tiles.shape == (80 * model.scale, 96 * model.scale, 3)
    margin = 4 * model.scale
    inner = np.abs(whole - tiles)[margin:-margin, margin:-margin]
    assert inner.max() <= 2, f"tiles differ by up to {inner.max()}/255 from the whole-image output"
    assert whole.std() > 1  # the random model does produce an image, not a constant


# Sizes and the stage cache


def test_target_size_from_factor_or_sides():
    assert target_size(64, 32, 2) == (128, 64)
    assert target_size(64, 32, 2, up_width=100) == (100, 50)
    assert target_size(64, 32, 2, up_height=48) == (96, 48)
    assert target_size(64, 32, 2, 70, 90) == (70, 90)


@pytest.mark.parametrize(("params", "size"), [
    ({"upscaler": "esrgan-4x.pth", "upscale_by": 4}, (128, 128)),  # native factor
    ({"upscaler": "esrgan-4x.pth", "upscale_by": 2}, (64, 64)),  # 4x, then resampled down
    ({"upscaler": "compact-2x.safetensors", "upscale_by": 3}, (96, 96)),  # 2x, then resampled up
    ({"upscaler": "compact-2x.pth", "upscale_width": 80}, (80, 80)),
    ({"upscaler": "lanczos", "upscale_width": 40, "upscale_height": 56}, (40, 56)),
    ({"upscaler": "none", "upscale_by": 4}, (32, 32)),
])
def test_output_sizes(backend, params, size):
    (result,) = backend.render([_cell(**params)])
    assert result.image.size == size


def test_upscaler_by_noise_level_grid_renders_each_base_and_each_upscale_once(model_files, tmp_path, monkeypatch):
    spec = write_spec(model_files["folder"], """
        grid:
          params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, sampler: Euler, upscale_by: 2}
        axes:
          seed: 1, 2
          upscaler: lanczos, esrgan-4x.pth, compact-2x.safetensors
          noise_level: 10, 50
        """, name="grid.yaml")
    denoised: list[int] = []
    upscaled: list[tuple[int, int]] = []
    original_denoise = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise",
                        lambda self, batch: denoised.append(len(batch)) or original_denoise(self, batch))
    from gridgen.backends.sd.stages import upscale_stage

    original_upscale = upscale_stage.model_upscale
    monkeypatch.setattr(upscale_stage, "model_upscale",
                        lambda model, image, *rest: upscaled.append(image.size) or original_upscale(model, image,
                                                                                                    *rest))
    options = RunOptions(out=tmp_path / "out", batch_size=4)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 12
    assert sum(denoised) == 2  # one base image per seed
    assert len(upscaled) == 4  # one per seed and model: noise_level does not touch these upscalers
    sizes = {e["key"]: Image.open(tmp_path / "out" / e["file"]).size for e in journal}
    assert set(sizes.values()) == {(64, 64)}


# Axis libraries


@pytest.mark.parametrize(("library", "param"), [("axes/upscalers.yaml", "upscaler"),
                                                 ("axes/noise_level.yaml", "noise_level")])
def test_axis_libraries_teach_every_value_and_validate(tmp_path, library, param):
    spec = write_spec(tmp_path, f"""
        include: {library}
        grid:
          params: {{model: gridgen-tiny, steps: 2, width: 32, height: 32}}
        """)
    prepared = prepare(spec, RunOptions(out=tmp_path / "out"))  # validates every cell: a bad value fails here
    (axis,) = prepared.plan.spec.axes
    assert axis.id == param and len(axis.description) > 200 and len(axis.values) >= 5
    for value in axis.values:
        assert value.title and len(value.description) > 80, value.key
        assert set(value.params) == {param}


# The SD x4 upscaler


def test_x4_matches_diffusers_own_pipeline(x4_folder):
    from diffusers import StableDiffusionUpscalePipeline

    from gridgen.backends.sd.stages import x4

    image = _test_image(24, 16)
    params = {"prompt": "a red square", "negative_prompt": "blurry", "seed": 5, "sampler": "DDIM",
              "schedule": "automatic", "noise_level": 30, "upscale_steps": 4, "upscale_cfg_scale": 6.0}
    ours = x4.x4_upscale(x4.load_x4(x4_folder, torch.device("cpu"), torch.float32), image, params)
    pipe = StableDiffusionUpscalePipeline.from_pretrained(x4_folder, local_files_only=True)
    theirs = pipe(prompt="a red square", negative_prompt="blurry", image=image, num_inference_steps=4,
                  guidance_scale=6.0, noise_level=30, generator=torch.Generator("cpu").manual_seed(5),
                  output_type="np").images[0]
    assert ours.size == (96, 64)
    difference = np.abs(np.asarray(ours, dtype=np.float32) - theirs * 255)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from diffusers' StableDiffusionUpscalePipeline"


def test_x4_problems_are_found_before_rendering(backend, x4_folder):
    (problem,) = backend.validate({"upscaler": "sd-x4:tiny-x4", "noise_level": X4_MAX_NOISE + 1})
    assert problem.param == "noise_level" and f"maximum of this x4 model ({X4_MAX_NOISE}" in problem.message
    assert backend.validate({"upscaler": "sd-x4:tiny-x4", "noise_level": X4_MAX_NOISE}) == []
    (problem,) = backend.validate({"upscaler": f"sd-x4:{TINY_MODEL_DIR}"})
    assert problem.param == "upscaler" and "not an x4 upscaler" in problem.message
    (problem,) = backend.validate({"upscaler": "sd-x4:nowhere"})
    assert "not found" in problem.message


def test_upscaler_by_noise_level_grid_with_x4_renders_each_base_once(model_files, x4_folder, tmp_path, monkeypatch):
    spec = write_spec(model_files["folder"], """
        grid:
          params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, sampler: Euler, upscale_by: 4,
                   upscale_steps: 2}
        axes:
          upscaler: lanczos, sd-x4:tiny-x4, compact-2x.pth
          noise_level: 0, 60
        """, name="x4grid.yaml")
    denoised: list[int] = []
    original_denoise = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise",
                        lambda self, batch: denoised.append(len(batch)) or original_denoise(self, batch))
    from gridgen.backends.sd.stages import upscale_stage

    x4_runs: list[int] = []
    original_x4 = upscale_stage.x4.x4_upscale
    monkeypatch.setattr(upscale_stage.x4, "x4_upscale",
                        lambda model, image, params: x4_runs.append(params["noise_level"]) or original_x4(
                            model, image, params))
    options = RunOptions(out=tmp_path / "out", batch_size=6)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    images = {e["key"]: np.asarray(Image.open(tmp_path / "out" / e["file"]), dtype=np.float32) for e in journal}
    assert len(images) == 6 and sum(denoised) == 1  # one base image for the whole grid
    assert sorted(x4_runs) == [0, 60]  # the x4 upscaler once per noise level
    assert all(image.shape == (128, 128, 3) for image in images.values())
    assert np.abs(images["sd_x4_tiny_x4/0"] - images["sd_x4_tiny_x4/60"]).mean() > 1  # noise_level matters to x4
    assert np.array_equal(images["lanczos/0"], images["lanczos/60"])  # and to nothing else


# Hires fix and SD upscale: img2img passes with the cell's own model


def test_pixel_hires_fix_matches_diffusers_img2img(backend):
    from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

    from gridgen.backends.sd.stages import second_pass

    base = _test_image(32, 32)
    params = {**backend_defaults(), "prompt": "a red square", "negative_prompt": "blurry", "seed": 3,
              "sampler": "Euler", "steps": 6, "cfg_scale": 5.0, "hires_steps": 0, "hires_denoise": 0.5}
    parts, prompts, _ = backend._loaded_model(params)
    enlarge = lambda image, size: image.resize(size, Image.Resampling.LANCZOS)  # noqa: E731
    ours = second_pass.pixel_hires(parts, prompts, base, enlarge, (64, 64), params)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a red square", image=enlarge(base, (64, 64)), strength=0.5, num_inference_steps=6,
                  guidance_scale=5.0, negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(3),
                  output_type="np").images[0]
    difference = np.abs(np.asarray(ours, dtype=np.float32) - theirs * 255)
    assert difference.max() <= 2, f"up to {difference.max()}/255 from diffusers' StableDiffusionImg2ImgPipeline"


def backend_defaults() -> dict:
    from gridgen.params import Registry

    return {**Registry().defaults(), "model": "gridgen-tiny"}


@pytest.mark.parametrize("upscaler", ["latent", "latent-antialiased", "latent-bicubic", "latent-bicubic-antialiased",
                                      "latent-nearest", "latent-nearest-exact", "hires:lanczos",
                                      "hires:compact-2x.pth", "sd-upscale", "sd-upscale:compact-2x.safetensors"])
def test_second_pass_upscalers_render_at_the_asked_size(backend, upscaler):
    assert backend.validate({"upscaler": upscaler}) == []
    (result,) = backend.render([_cell(upscaler=upscaler, upscale_width=64, upscale_height=48, tile_size=32,
                                      tile_overlap=8, hires_steps=2)])
    assert result.image.size == (64, 48)
    assert np.asarray(result.image, dtype=np.float32).std() > 1


def test_latent_modes_and_denoise_change_the_image(backend):
    def render(**params):
        (result,) = backend.render([_cell(upscale_by=2, hires_steps=3, **params)])
        return np.asarray(result.image, dtype=np.float32)

    nearest = render(upscaler="latent-nearest", hires_denoise=0.6)
    assert np.abs(nearest - render(upscaler="latent-bicubic", hires_denoise=0.6)).mean() > 0.5
    assert np.abs(nearest - render(upscaler="latent-nearest", hires_denoise=0.9)).mean() > 0.5


def test_sd_upscale_redraws_each_tile(backend, monkeypatch):
    from gridgen.backends.sd.stages import second_pass

    encoded: list[tuple[int, ...]] = []
    original = second_pass.encode
    monkeypatch.setattr(second_pass, "encode",
                        lambda vae, pixels, generators: encoded.append(tuple(pixels.shape[2:])) or original(
                            vae, pixels, generators))
    (result,) = backend.render([_cell(upscaler="sd-upscale", upscale_by=2, tile_size=32, tile_overlap=8,
                                      hires_steps=2)])
    assert result.image.size == (64, 64)
    assert encoded == [(32, 32)] * 9  # tiles start at 0, 24 and 32 on each side


def test_second_pass_problems_are_found_before_rendering(backend):
    (problem,) = backend.validate({"upscaler": "hires:not-a-model.pth"})
    assert "spandrel cannot identify" in problem.message
    (problem,) = backend.validate({"upscaler": "sd-upscale", "tile_size": 64, "tile_overlap": 64})
    assert problem.param == "tile_overlap"


def test_the_whole_upscaler_library_shares_one_base_image(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, """
        include: axes/upscalers.yaml
        grid:
          params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, sampler: Euler, hires_steps: 2,
                   tile_size: 32, tile_overlap: 8}
        """)
    denoised: list[int] = []
    original_denoise = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise",
                        lambda self, batch: denoised.append(len(batch)) or original_denoise(self, batch))
    options = RunOptions(out=tmp_path / "out", batch_size=4)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    sizes = {e["key"]: Image.open(tmp_path / "out" / e["file"]).size for e in journal}
    assert len(sizes) == 14 and "sd_x4" not in sizes  # every value but the skipped x4 one
    assert sum(denoised) == 1
    assert sizes.pop("none") == (32, 32) and set(sizes.values()) == {(64, 64)}
