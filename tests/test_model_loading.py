"""Models as users have them: single-file checkpoints (SD 1.x, SD 2.x, SDXL) loaded offline through the
shipped configs, kind detection and its validation, models_dir names, and a clear error for every bad file."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.kinds import registry as kinds
from gridgen.backends.sd.models import checkpoint, families, locate, vocab
from gridgen.backends.sd.models.load import load_components
from gridgen.cli import main
from gridgen.errors import ModelError
from gridgen.params import Registry, coerce
from tests import tiny_models
from tests.spec_helpers import write_spec

CPU = torch.device("cpu")

# Published parameter counts of the released models' UNets and text encoders (VAEs: 83,653,863).
UNET_PARAMETERS = {"sd1": 859_520_964, "sd2-v": 865_910_724, "sdxl": 2_567_463_684, "sd2-x4-upscaler": 473_398_020}
TEXT_PARAMETERS = {("sd1", "text_encoder"): 123_060_480, ("sd2-v", "text_encoder"): 340_387_840,
                   ("sdxl", "text_encoder"): 123_060_480, ("sdxl", "text_encoder_2"): 694_659_840}


@pytest.fixture(scope="module", autouse=True)
def _vocab_cache(tmp_path_factory):
    # The CLIP vocabulary files are written once per module, away from the user's own cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, _vocab_cache):
    """Tiny SD1, SD1-inpaint, SD2-v and SDXL models (folders and LDM state dicts) and a config root for them."""
    root = tmp_path_factory.mktemp("tiny")
    models = {
        "sd1": tiny_models.build(root / "sd1", "sd1"),
        "sd1-inpaint": tiny_models.build(root / "sd1-inpaint", "sd1-inpaint", in_channels=9, seed=1),
        "sd2-v": tiny_models.build(root / "sd2-v", "sd2-v", seed=2),
        "sdxl": tiny_models.build(root / "sdxl", "sdxl", seed=3),
    }
    return models, tiny_models.config_root(root / "configs", list(models.values()))


@pytest.fixture(autouse=True)
def _tiny_configs(request, monkeypatch):
    # Detection reads the config root at call time; memoised lookups are per process.
    if "tiny" in request.fixturenames:
        monkeypatch.setattr(families, "CONFIG_ROOT", request.getfixturevalue("tiny")[1])
    for cached in (locate.resolve_model, locate.resolve_vae, locate.read_model_info):
        cached.cache_clear()


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_cell(**params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 3, "cfg_scale": 5.0, "sampler": "Euler"}
    return Cell(index=0, key="0", coords=("0",), params={**base, **params})


def messages(problems, param):
    return [p.message for p in problems if p.param == param]


# Single files


@pytest.mark.parametrize("family, suffix", [("sd1", ".safetensors"), ("sd1", ".ckpt"), ("sd2-v", ".safetensors"),
                                            ("sdxl", ".safetensors"), ("sd1-inpaint", ".ckpt"),
                                            ("sd1", "legacy.ckpt")])
def test_a_single_file_loads_offline_with_the_folder_weights(tiny, tmp_path, offline, family, suffix):
    model = tiny[0][family]
    path = model.write(tmp_path / f"model.{suffix.lstrip('.')}")
    info = locate.read_model_info(path)
    assert info.config == families.CONFIG_ROOT / family
    loaded = load_components(path, None, CPU, torch.float32, info.config)
    reference = load_components(model.folder, None, CPU, torch.float32, model.folder)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = getattr(loaded, name), getattr(reference, name)
        assert (ours is None) == (theirs is None), name
        if theirs is not None:
            expected = theirs.state_dict()
            got = ours.state_dict()
            assert set(got) == set(expected), name
            assert all(torch.equal(got[key], expected[key]) for key in expected), name
    assert loaded.tokenizer("a red cat").input_ids == reference.tokenizer("a red cat").input_ids
    assert loaded.tokenizer.pad_token == reference.tokenizer.pad_token
    assert loaded.scheduler_config["prediction_type"] == reference.scheduler_config["prediction_type"]


def test_gridgen_run_renders_single_files_named_in_models_dir(tiny, tmp_path, offline, capsys):
    models_dir = tmp_path / "models"
    tiny[0]["sd1"].write(models_dir / "Stable-diffusion" / "sd-v1-5-pruned-emaonly.safetensors")
    tiny[0]["sd1"].write(models_dir / "Stable-diffusion" / "old.ckpt")
    tiny[0]["sdxl"].write(models_dir / "Stable-diffusion" / "sd_xl_base_1.0.safetensors")
    spec = write_spec(tmp_path, f"""
        grid:
          title: single files
          format: png
          params: {{prompt: a red square, steps: 3, sampler: Euler, seed: 3}}
        axes:
          model:
            values:
              folder: model={tiny[0]["sd1"].folder}
              safetensors: model=sd-v1-5-pruned-emaonly
              ckpt: model=old
              xl: model=sd_xl_base_1.0
        """)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--models-dir", str(models_dir)]) == 0
    printed = capsys.readouterr().out
    assert "rendered 4" in printed and "models: 4 loaded" in printed
    images = {name: np.asarray(Image.open(out / "images" / f"{name}.png"))
              for name in ("folder", "safetensors", "ckpt", "xl")}
    assert images["xl"].shape == (32, 32, 3) and images["xl"].std() > 1
    assert images["folder"].shape == (32, 32, 3) and images["folder"].std() > 1
    assert np.array_equal(images["folder"], images["safetensors"])
    assert np.array_equal(images["folder"], images["ckpt"])


def test_a_vae_file_replaces_the_models_own(tiny, tmp_path):
    other = tiny_models.build(tmp_path / "other", "sd1", seed=7)
    vae_state = {key.removeprefix("first_stage_model."): value for key, value in other.state.items()
                 if key.startswith("first_stage_model.")}
    vae_file = tmp_path / "models" / "VAE" / "mine.vae.pt"
    vae_file.parent.mkdir(parents=True)
    torch.save(vae_state, vae_file)
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, models_dir=tmp_path / "models", device="cpu"))
    cell = make_cell(model=str(tiny[0]["sd1"].folder), vae="mine.vae")
    assert backend.validate(cell.params) == []
    assert backend.load_key(cell.params)[1] == str(vae_file)
    (result,) = backend.render([cell])
    expected = other.folder / "vae" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    got = backend._components.vae.state_dict()
    assert all(torch.equal(got[k], v) for k, v in load_file(str(expected)).items())
    assert result.image.size == (32, 32)
    backend.close()


# Detection


def _shapes_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return path


SD1_TEXT = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8)}
SD2_TEXT = {"cond_stage_model.model.positional_embedding": (77, 8)}
XL_TEXT = {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
           "conditioner.embedders.1.model.positional_embedding": (77, 8)}


@pytest.mark.parametrize("text, channels, prediction, family", [
    (SD1_TEXT, 4, "auto", "sd1"), (SD1_TEXT, 8, "auto", "sd1-ip2p"), (SD1_TEXT, 9, "auto", "sd1-inpaint"),
    (SD2_TEXT, 4, "auto", "sd2-v"), (SD2_TEXT, 4, "v_prediction", "sd2-v"), (SD2_TEXT, 4, "epsilon", "sd2"),
    (SD2_TEXT, 5, "auto", "sd2-depth"), (SD2_TEXT, 7, "auto", "sd2-x4-upscaler"), (SD2_TEXT, 9, "auto", "sd2-inpaint"),
    (XL_TEXT, 4, "auto", "sdxl"),
])
def test_the_family_follows_the_text_encoder_layout_and_unet_channels(tmp_path, text, channels, prediction, family):
    path = _shapes_file(tmp_path / "m.safetensors", {**text, families.UNET_INPUT: (8, channels, 3, 3)})
    assert families.detect_family(path, checkpoint.read_shapes(path), prediction) == families.CONFIG_ROOT / family
    info = locate.read_model_info(path, prediction)
    assert info.in_channels == channels and info.sdxl == (family == "sdxl")
    assert info.native_size == {"sd2-v": 768, "sdxl": 1024, "sd2-x4-upscaler": 512}.get(family, 512)


@pytest.mark.parametrize("shapes, expected", [
    ({"lora_unet_down_blocks_0.alpha": (1,)}, "no Stable Diffusion UNet"),
    ({families.UNET_INPUT: (8, 4, 3, 3), "conditioner.embedders.0.model.text_projection": (8, 8)}, "SDXL refiner"),
    ({families.UNET_INPUT: (8, 6, 3, 3), **SD1_TEXT}, "6 input channels"),
])
def test_checkpoints_gridgen_cannot_run_are_named(tmp_path, shapes, expected):
    path = _shapes_file(tmp_path / "odd.safetensors", shapes)
    with pytest.raises(ModelError, match=expected) as caught:
        locate.read_model_info(path)
    assert str(path) in str(caught.value)


def test_every_shipped_family_is_a_loadable_diffusers_config():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shipped = {folder.name for folder in families.CONFIG_ROOT.iterdir()}
    assert shipped == set(families.FAMILIES.values()) | {"sd2"}
    for name in sorted(shipped):
        folder = families.CONFIG_ROOT / name
        index = DiffusionPipeline.load_config(folder)
        assert index["_class_name"].startswith("StableDiffusion"), name
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        assert unet.config.in_channels in kinds.KIND_BY_CHANNELS, name
        if name in UNET_PARAMETERS:
            assert sum(p.numel() for p in unet.parameters()) == UNET_PARAMETERS[name]
        if name != "sd2-x4-upscaler":  # the upscaler's VAE is a smaller, 3-level one
            assert sum(p.numel() for p in vae.parameters()) == 83_653_863, name
        for encoder in ("text_encoder", "text_encoder_2"):
            if (folder / encoder).is_dir():
                config = CLIPTextConfig.from_pretrained(folder / encoder)
                assert config.vocab_size == 49408
                with init_empty_weights():
                    model = (CLIPTextModelWithProjection if encoder == "text_encoder_2" else CLIPTextModel)(config)
                if (name, encoder) in TEXT_PARAMETERS:
                    assert sum(p.numel() for p in model.parameters()) == TEXT_PARAMETERS[(name, encoder)]
        widths = [CLIPTextConfig.from_pretrained(folder / encoder).hidden_size
                  for encoder in ("text_encoder", "text_encoder_2") if (folder / encoder).is_dir()]
        assert sum(widths) == unet.config.cross_attention_dim, name  # SDXL concatenates its two encoders


def test_the_clip_vocabulary_comes_from_an_installed_package(tmp_path):
    from transformers import CLIPTokenizer

    assert vocab.find_vocab_file() is not None
    files = vocab.tokenizer_files()
    tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"))
    # Token ids of the released CLIP vocabulary: "a photo of a cat" and the two special tokens.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408


def test_without_a_vocabulary_package_single_files_say_what_to_install(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(vocab, "VOCAB_PACKAGES", ("no_such_package_here",))
    path = tiny[0]["sd1"].write(tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="open-clip-torch"):
        load_components(path, None, CPU, torch.float32, locate.read_model_info(path).config)


# Kinds


def test_kind_comes_from_the_unet_and_other_kinds_are_refused_until_rendered(tiny, tmp_path):
    tiny[0]["sd1-inpaint"].write(tmp_path / "inpaint.safetensors")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    # An inpainting model renders, given something to inpaint.
    (message,) = messages(backend.validate(make_cell(model="inpaint.safetensors").params), "model")
    assert "inpainting model (a 9-channel UNet)" in message and "init_image and mask" in message
    folder = backend.validate(make_cell(model=str(tiny[0]["sd1-inpaint"].folder)).params)
    assert "init_image and mask" in messages(folder, "model")[0]
    upscaler = tmp_path / "upscaler"
    shutil.copytree(tiny[0]["sd1"].folder, upscaler)
    config = json.loads((upscaler / "unet" / "config.json").read_text())
    (upscaler / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 7}))
    (message,) = messages(backend.validate(make_cell(model=str(upscaler)).params), "model")
    assert "not an x4 upscaler (StableDiffusionUpscalePipeline" in message  # a 7-channel UNet alone is not one


def test_pipeline_param_must_fit_the_unet(tiny, tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    model = str(tiny[0]["sd1"].folder)
    pipeline = coerce(Registry().lookup("pipeline"), "Inpainting")
    (message,) = messages(backend.validate(make_cell(model=model, pipeline=pipeline).params), "pipeline")
    assert "pipeline inpaint needs a 9-channel UNet" in message and "txt2img model (4-channel UNet)" in message
    assert backend.validate(make_cell(model=model, pipeline="txt2img").params) == []


def test_a_param_of_another_kind_names_the_param_and_the_models_kind(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(kinds.PARAM_KINDS, "mask", frozenset({"inpaint"}))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    problems = backend.validate(make_cell(model=str(tiny[0]["sd1"].folder), mask="m.png").params)
    assert any("mask is for inpaint models" in m and "txt2img model" in m for m in messages(problems, "mask"))


def test_prediction_param_overrides_the_scheduler(tiny, tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    model = str(tiny[0]["sd1"].folder)
    eps, v = (np.asarray(r.image, dtype=float) for prediction in ("auto", "v_prediction")
              for r in backend.render([make_cell(model=model, prediction=prediction)]))
    assert np.abs(eps - v).mean() > 1
    assert backend.batch_key(make_cell(model=model).params) != backend.batch_key(
        make_cell(model=model, prediction="epsilon").params)
    backend.close()


# Bad files


def test_a_missing_bare_name_says_where_it_looked(tmp_path, capsys):
    spec = write_spec(tmp_path, "grid: {params: {model: sd-v1-5-pruned-emaonly}}\naxes:\n  seed: 1, 2\n")
    assert main(["validate", str(spec), "--models-dir", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "'sd-v1-5-pruned-emaonly' not found" in err
    assert str(tmp_path / "models" / "Stable-diffusion" / "sd-v1-5-pruned-emaonly.safetensors") in err


def test_a_corrupt_checkpoint_is_a_model_problem(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated zip")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    for name in ("broken.safetensors", "broken.ckpt"):
        (message,) = messages(backend.validate(make_cell(model=name).params), "model")
        assert str(tmp_path / name) in message and "re-download" in message


def test_a_ckpt_that_needs_pickled_code_is_refused(tiny, tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": tiny[0]["sd1"].state, "args": argparse.Namespace(lr=1)}, path)
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model="pickled.ckpt").params), "model")
    assert "refuses to load as plain weights (it pickles a argparse.Namespace object)" in message
    assert "never runs code" in message
    assert ".safetensors" in message


def test_a_file_that_is_not_a_vae_is_refused_as_vae(tiny, tmp_path):
    _shapes_file(tmp_path / "lora.safetensors", {"lora_unet_down_blocks_0.alpha": (1,)})
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model=str(tiny[0]["sd1"].folder), vae="lora.safetensors").params),
                          "vae")
    assert "no VAE decoder weights" in message


def test_a_file_of_another_type_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model="notes.txt").params), "model")
    assert ".safetensors or .ckpt" in message


def test_families_json_is_valid():
    for path in families.CONFIG_ROOT.rglob("*.json"):
        json.loads(path.read_text())


# SDXL


def _render(backend, **params) -> np.ndarray:
    (result,) = backend.render([make_cell(**params)])
    return np.asarray(result.image, dtype=np.float64)


def test_sdxl_renders_what_diffusers_own_pipeline_renders(tiny, tmp_path):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

    folder = tiny[0]["sdxl"].folder
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe("a red cat", negative_prompt="blurry", num_inference_steps=5, guidance_scale=6.0,
                     generator=torch.Generator().manual_seed(5), output_type="np").images[0]
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    ours = _render(backend, model=str(folder), prompt="a red cat", negative_prompt="blurry", steps=5, cfg_scale=6.0,
                   seed=5, sampler="Euler a")
    assert ours.std() > 1
    assert np.abs(ours - np.round(reference * 255)).max() <= 1.0
    # diffusers applies clip_skip to the prompt only; gridgen to both prompts, so it is checked for effect here.
    assert np.abs(ours - _render(backend, model=str(folder), prompt="a red cat", negative_prompt="blurry", steps=5,
                                 cfg_scale=6.0, seed=5, sampler="Euler a", clip_skip=2)).mean() > 1
    backend.close()


def test_an_empty_sdxl_negative_prompt_is_zeros_unless_the_model_says_otherwise(tiny, tmp_path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    folder = tmp_path / "xl"
    shutil.copytree(tiny[0]["sdxl"].folder, folder)
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))

    def both(negative_for_diffusers):
        pipe = StableDiffusionXLPipeline.from_pretrained(folder)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        reference = pipe("a red cat", negative_prompt=negative_for_diffusers, num_inference_steps=4,
                         guidance_scale=6.0, generator=torch.Generator().manual_seed(5), output_type="np").images[0]
        ours = _render(backend, model=str(folder), prompt="a red cat", negative_prompt="", steps=4, cfg_scale=6.0,
                       seed=5, sampler="Euler")
        return ours, np.round(reference * 255)

    zeroed, reference = both(None)  # diffusers zeroes a negative prompt it is not given
    assert np.abs(zeroed - reference).max() <= 1.0
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    encoded, reference = both("")
    assert np.abs(encoded - reference).max() <= 1.0
    assert np.abs(encoded - zeroed).mean() > 1.0
    backend.close()


def test_sdxl_single_file_and_batches_render_as_the_folder_alone(tiny, tmp_path):
    model = tiny[0]["sdxl"]
    path = model.write(tmp_path / "xl.safetensors")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    mixed = [{"prompt": "a red cat", "cfg_scale": 7.0, "seed": 1}, {"prompt": "a dog", "cfg_scale": 1.0, "seed": 2},
             {"prompt": "", "cfg_scale": 3.0, "seed": 3, "negative_prompt": "green"}]
    alone = [_render(backend, model=str(model.folder), **params) for params in mixed]
    cells = [Cell(index=i, key=str(i), coords=(str(i),), params={**make_cell().params, **params, "model": str(path)})
             for i, params in enumerate(mixed)]
    assert len({backend.batch_key(cell.params) for cell in cells}) == 1
    together = [np.asarray(r.image, dtype=np.float64) for r in backend.render(cells)]
    for one, batched in zip(alone, together, strict=True):
        assert np.abs(one - batched).max() <= 1.0
    backend.close()


# Model cache


def test_alternating_models_are_loaded_once_each(tiny, tmp_path, monkeypatch):
    from gridgen.backends.sd import render

    calls = []
    real = render.load_components
    monkeypatch.setattr(render, "load_components", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    single = tiny[0]["sd1"].write(tmp_path / "one.safetensors")
    models = [str(single), str(tiny[0]["sdxl"].folder)]
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    first = [_render(backend, model=model) for model in models]
    again = [_render(backend, model=model) for model in models * 2]
    assert len(calls) == 2 and backend.models.loads == 2 and backend.models.hits == 4
    assert all(np.array_equal(image, first[i % 2]) for i, image in enumerate(again))
    assert "models: 2 loaded, 4 reused from memory" in backend.stats()
    # A file replaced on disk (a newer modification time) is read again.
    stat = single.stat()
    os.utime(single, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _render(backend, model=str(single))
    assert len(calls) == 3
    backend.close()


def test_a_zero_budget_keeps_only_the_model_in_use(tiny, tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0, model_cache_bytes=0))
    for model in ("sd1", "sdxl", "sd1"):
        _render(backend, model=str(tiny[0][model].folder), steps=1)
    assert backend.models.loads == 3 and len(backend.models) == 1
    backend.close()


def test_sd2_single_files_are_768_v_unless_prediction_says_epsilon(tiny, tmp_path):
    model = tiny[0]["sd2-v"]
    path = str(model.write(tmp_path / "sd2.safetensors"))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    assert locate.read_model_info(Path(path), "epsilon").config.name == "sd2"
    file_eps = _render(backend, model=path, prediction="epsilon")
    file_auto = _render(backend, model=path)
    assert backend.models.loads == 2  # the two families' configs differ, so each is its own entry
    assert np.array_equal(file_auto, _render(backend, model=str(model.folder)))
    assert np.array_equal(file_eps, _render(backend, model=str(model.folder), prediction="epsilon"))
    assert np.abs(file_auto - file_eps).mean() > 1
    backend.close()


def test_an_incomplete_folder_names_the_missing_file(tiny, tmp_path):
    import shutil

    for name in ("no-weights", "no-vocab"):
        shutil.copytree(tiny[0]["sdxl"].folder, tmp_path / name)
    for weights in (tmp_path / "no-weights" / "text_encoder_2").glob("*.safetensors"):
        weights.unlink()
    for vocabulary in ("vocab.json", "merges.txt", "tokenizer.json"):
        (tmp_path / "no-vocab" / "tokenizer_2" / vocabulary).unlink(missing_ok=True)
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model="no-weights").params), "model")
    assert f"{tmp_path / 'no-weights' / 'text_encoder_2'}/ weights" in message and "never downloads" in message
    (message,) = messages(backend.validate(make_cell(model="no-vocab").params), "model")
    assert f"{tmp_path / 'no-vocab' / 'tokenizer_2'}/ vocabulary" in message


@pytest.mark.parametrize("family", ["sd1", "sd1-inpaint", "sd2-v", "sd2-depth", "sdxl", "sdxl-inpaint", "sdxl-ip2p"])
def test_shipped_configs_fit_full_size_checkpoints_in_the_ldm_layout(family):
    """Full-size UNets and VAEs of each family, built without memory (meta tensors), written in the LDM
    layout and converted back by diffusers with the shipped config: every tensor finds its place."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from tests import ldm_layout

    folder = families.CONFIG_ROOT / family
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    expected = {key: value.shape for key, value in unet.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(ldm_layout.unet_to_ldm(unet.state_dict(), unet.config), unet.config)
    assert {key: value.shape for key, value in converted.items()} == expected
    blocks = len(vae.config.block_out_channels)
    converted = convert_ldm_vae_checkpoint(ldm_layout.vae_to_ldm(vae.state_dict(), blocks), vae.config)
    assert {key: value.shape for key, value in converted.items()} == {k: v.shape for k, v in vae.state_dict().items()}


def test_names_resolve_as_a1111_finds_them(tiny, tmp_path):
    models_dir = tmp_path / "models"
    nested = tiny[0]["sd1"].write(models_dir / "Stable-diffusion" / "SD15" / "dreamshaper_8.safetensors")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, models_dir=models_dir))
    for value in ("dreamshaper_8", "dreamshaper_8.safetensors [879db523c3]", "SD15/dreamshaper_8"):
        assert backend.validate(make_cell(model=value).params) == [], value
        assert backend.load_key(make_cell(model=value).params)[0] == str(nested)
    (message,) = messages(backend.validate(make_cell(model="dreamshaper_9").params), "model")
    assert f"the subfolders of {models_dir / 'Stable-diffusion'}" in message


def test_sdxl_keeps_its_vae_in_fp32_when_the_rest_is_fp16(tiny):
    folder = tiny[0]["sdxl"].folder
    parts = load_components(folder, None, CPU, torch.float16, folder)
    assert parts.unet.dtype == torch.float16 and parts.text_encoder_2.dtype == torch.float16
    assert parts.vae.dtype == torch.float32  # its config says force_upcast: it overflows in fp16
    sd1 = load_components(tiny[0]["sd1"].folder, None, CPU, torch.float16, tiny[0]["sd1"].folder)
    assert sd1.vae.dtype == torch.float16


def test_gridgen_run_reports_every_bad_model_with_its_spec_line(tiny, tmp_path, capsys):
    models_dir = tmp_path / "models"
    tiny[0]["sd1-inpaint"].write(models_dir / "Stable-diffusion" / "inpainter.safetensors")
    (models_dir / "Stable-diffusion" / "broken.ckpt").write_bytes(b"PK\x03\x04 cut short")
    spec = write_spec(tmp_path, """
        grid:
          title: bad models
          params: {steps: 2}
        axes:
          model: missing-model, inpainter, broken
        """)
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--models-dir", str(models_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:5:" in err
    assert "'missing-model' not found" in err
    assert "inpainting model (a 9-channel UNet); give it init_image and mask" in err
    assert f"cannot read checkpoint {models_dir / 'Stable-diffusion' / 'broken.ckpt'}" in err
    assert not (tmp_path / "out" / "images").exists()


def test_a_failed_load_leaves_the_previous_model_usable(tiny, tmp_path):
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(tiny[0]["sd1"].folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu", cache_bytes=0))
    good = str(tiny[0]["sd1"].folder)
    before = _render(backend, model=good)
    with pytest.raises(ModelError, match=str(broken)):
        _render(backend, model=str(broken))
    assert np.array_equal(before, _render(backend, model=good))
    assert backend.models.loads == 1 and backend.models.hits == 1
    backend.close()
