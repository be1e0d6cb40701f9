"""The diffusers backend on the embedded tiny model: samplers, determinism, batching, CFG, validation, loading."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext, load_backend
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise.samplers import SAMPLERS, SCHEDULES, unsupported_schedule
from gridgen.backends.sd.models import locate
from gridgen.errors import GridError, ModelError
from gridgen.tiny import TINY_MODEL_DIR

STEPS = 4


def make_cell(index: int = 0, **params) -> Cell:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 1, "steps": STEPS, "cfg_scale": 7.0,
            "sampler": "Euler", "schedule": "automatic", "model": "gridgen-tiny"}
    return Cell(index=index, key=str(index), coords=(str(index),), params={**base, **params})


def pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.float64)


def render_one(backend, **params) -> np.ndarray:
    (result,) = backend.render([make_cell(**params)])
    return pixels(result)


@pytest.fixture(autouse=True)
def _fresh_resolution():
    # Resolution is memoised per process; tests build different folders under the same names.
    locate.resolve_model.cache_clear()
    locate.resolve_vae.cache_clear()
    locate.read_model_info.cache_clear()


@pytest.fixture(scope="module")
def backend():
    # No stage cache here: these tests must see every cell rendered, not served from an earlier test.
    instance = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device="cpu", cache_bytes=0))
    yield instance
    instance.close()


@contextmanager
def inputs_of(backend, component: str):
    """Collects the first input of every call to one of `backend`'s loaded modules inside the block."""
    list(backend.render([make_cell()]))  # make sure a model is loaded
    seen: list[torch.Tensor] = []
    module = attrgetter(component)(backend._components)
    handle = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


# Rendering


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_renders_a_finite_varied_image(backend, sampler):
    with inputs_of(backend, "vae.post_quant_conv") as latents:
        (result,) = backend.render([make_cell(sampler=sampler.name, steps=3)])
        assert result.image  # the decode runs on the decoder's thread: wait for it while the hook is on
    assert torch.isfinite(latents[0]).all()
    assert result.image.mode == "RGB" and result.image.size == (64, 64)
    assert pixels(result).std() > 1.0
    assert result.metadata["scheduler"] == sampler.scheduler
    assert result.metadata["sampler"] == sampler.name
    assert set(result.timings) >= {"denoise", "decode"}


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "automatic"])
def test_every_scheduler_class_renders_each_schedule_it_supports(backend, schedule):
    # A schedule type is a flag on the scheduler class, so one sampler per class covers it.
    classes = {s.scheduler: s.name for s in reversed(SAMPLERS)}
    for name in classes.values():
        if unsupported_schedule(name, schedule) is None:
            assert render_one(backend, sampler=name, schedule=schedule, steps=3).std() > 1.0, name


def test_rendering_is_deterministic(backend):
    first = render_one(backend, seed=11, sampler="Euler a")
    assert np.array_equal(first, render_one(backend, seed=11, sampler="Euler a"))
    assert not np.array_equal(first, render_one(backend, seed=12, sampler="Euler a"))


def test_matches_diffusers_own_pipeline(backend):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe("a red cat", negative_prompt="blurry", num_inference_steps=5, guidance_scale=6.0,
                     generator=torch.Generator().manual_seed(5), output_type="np").images[0]
    ours = render_one(backend, prompt="a red cat", negative_prompt="blurry", steps=5, cfg_scale=6.0, seed=5,
                      sampler="Euler a")
    assert np.abs(ours - np.round(reference * 255)).mean() <= 1.0


MIXED = [
    {"prompt": "a red square", "seed": 1, "cfg_scale": 7.0},
    {"prompt": "a blue circle", "seed": 2, "cfg_scale": 1.0, "negative_prompt": "green"},
    {"prompt": "a red square", "seed": 3, "cfg_scale": 4.5, "negative_prompt": "blurry"},
    {"prompt": "stripes", "seed": 4, "cfg_scale": 12.0},
    {"prompt": "a blue circle", "seed": 5, "cfg_scale": 7.0, "clip_skip": 2},
    {"prompt": "", "seed": 6, "cfg_scale": 3.0},
    {"prompt": "dots, lots of dots", "seed": 1, "cfg_scale": 7.0},
    {"prompt": "stripes", "seed": 4_000_000_000, "cfg_scale": 0.5},
]


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a", "DPM++ SDE", "DPM++ 2M SDE Karras"])
def test_batch_matches_one_at_a_time(backend, sampler):
    cells = [make_cell(i, sampler=sampler, steps=6, **params) for i, params in enumerate(MIXED)]
    assert len({backend.batch_key(c.params) for c in cells}) == 1
    alone = [pixels(r) for cell in cells for r in backend.render([cell])]
    together = {r.cell.index: pixels(r) for r in backend.render(cells)}
    for cell, image in zip(cells, alone, strict=True):
        assert np.abs(together[cell.index] - image).mean() <= 1.0, cell.params


def test_cfg_matters(backend):
    assert np.abs(render_one(backend, cfg_scale=1.0) - render_one(backend, cfg_scale=7.0)).mean() > 1.0


def test_unguided_cells_skip_the_unconditional_pass(backend):
    with inputs_of(backend, "unet") as calls:
        cells = [make_cell(0, cfg_scale=1.0), make_cell(1, cfg_scale=7.0), make_cell(2, cfg_scale=1.0, seed=3)]
        list(backend.render(cells))
    assert [len(x) for x in calls] == [4] * STEPS  # 3 conditional rows + 1 unconditional


def test_max_batch_splits_long_lists():
    small = DiffusersBackend(BackendContext(spec_dir=Path.cwd(), device="cpu", max_batch=2, cache_bytes=0))
    with inputs_of(small, "unet") as calls:
        results = list(small.render([make_cell(i, seed=i) for i in range(5)]))
    assert sorted(r.cell.index for r in results) == [0, 1, 2, 3, 4]
    assert [len(x) for x in calls] == [4] * STEPS + [4] * STEPS + [2] * STEPS  # (cond + uncond) x 2, 2, 1 cells
    small.close()


def test_clip_skip_changes_the_image(backend):
    assert not np.array_equal(render_one(backend, clip_skip=1), render_one(backend, clip_skip=2))


def test_size_and_output_resize(backend):
    (wide,) = backend.render([make_cell(width=96, height=64, out_width=48)])
    assert wide.image.size == (48, 32)
    assert (wide.metadata["width"], wide.metadata["height"]) == (96, 64)
    (exact,) = backend.render([make_cell(out_width=20, out_height=30)])
    assert exact.image.size == (20, 30)
    (tall,) = backend.render([make_cell(out_height=128)])
    assert tall.image.size == (128, 128)


def test_text_embeddings_are_cached(backend):
    list(backend.render([make_cell(prompt="a cached prompt", negative_prompt="a cached negative")]))
    encodes: list[int] = []
    hook = backend.prompts.text_encoder.register_forward_hook(lambda _m, args, _o: encodes.append(len(args[0])))
    try:
        list(backend.render([make_cell(prompt="a cached prompt", negative_prompt="a cached negative", seed=9)]))
        assert encodes == []
        misses = backend.prompts.cache.misses
        list(backend.render([make_cell(prompt="a new prompt", negative_prompt="a cached negative")]))
        assert encodes == [1] and backend.prompts.cache.misses == misses + 1
    finally:
        hook.remove()


# Keys


def test_batch_key_groups_cells_that_can_share_a_batch(backend):
    key = backend.batch_key(make_cell().params)
    assert backend.batch_key(make_cell(prompt="other", seed=5, cfg_scale=2.0, clip_skip=2).params) == key
    assert backend.batch_key(make_cell(width=64, height=64).params) == key  # the native size spelled out
    assert backend.batch_key(make_cell(steps=STEPS + 1).params) != key
    assert backend.batch_key(make_cell(sampler="Euler a").params) != key
    assert backend.batch_key(make_cell(width=96).params) != key


def test_load_key_and_description(backend):
    params = make_cell().params
    assert backend.load_key(params) == (str(TINY_MODEL_DIR), "auto", ())
    assert backend.describe_load(params) == f"model {TINY_MODEL_DIR} (vae auto)"


# Validation


def messages(problems, param):
    return [p.message for p in problems if p.param == param]


def test_valid_params_have_no_problems(backend):
    assert backend.validate(make_cell().params) == []
    assert backend.validate(make_cell(sampler="DPM++ 2M", schedule="karras", width=96, clip_skip=2).params) == []


def test_missing_model_names_the_value_and_what_to_do(tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, models_dir=tmp_path / "models"))
    (message,) = messages(backend.validate(make_cell(model="no-such-model").params), "model")
    assert "'no-such-model' not found" in message
    assert str(tmp_path / "models") in message and "--models-dir" in message


def test_missing_hub_id_mentions_the_cache(backend):
    (message,) = messages(backend.validate(make_cell(model="someone/not-cached-anywhere").params), "model")
    assert "Hugging Face cache" in message


def test_models_resolve_from_the_spec_dir_and_models_dir(tmp_path):
    shutil.copytree(TINY_MODEL_DIR, tmp_path / "models" / "Stable-diffusion" / "mine")
    shutil.copytree(TINY_MODEL_DIR, tmp_path / "spec" / "local")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path / "spec", models_dir=tmp_path / "models"))
    assert backend.validate(make_cell(model="mine").params) == []
    assert backend.load_key(make_cell(model="local").params)[0] == str(tmp_path / "spec" / "local")
    assert backend.validate(make_cell(model=str(tmp_path / "spec" / "local")).params) == []


def test_models_resolve_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(TINY_MODEL_DIR, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    assert backend.validate(make_cell(model="someone/tiny").params) == []
    assert backend.load_key(make_cell(model="someone/tiny").params)[0] == str(snapshot)


def test_vae_is_resolved_like_a_model(backend):
    assert messages(backend.validate(make_cell(vae="no-such-vae").params), "vae")
    assert backend.validate(make_cell(vae=str(TINY_MODEL_DIR / "vae")).params) == []
    assert backend.load_key(make_cell(vae=str(TINY_MODEL_DIR)).params)[1] == str(TINY_MODEL_DIR / "vae")


def test_bad_sampler_schedule_combo(backend):
    (message,) = messages(backend.validate(make_cell(sampler="DDIM", schedule="karras").params), "schedule")
    assert "DDIM" in message and "karras" in message


def test_size_and_clip_skip_limits(backend):
    problems = backend.validate(make_cell(width=16, height=38, clip_skip=3).params)
    assert "at least 32" in messages(problems, "width")[0]
    assert "multiple of 4" in messages(problems, "height")[0]
    assert "2 layers" in messages(problems, "clip_skip")[0]


def test_a_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "empty").mkdir()
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model="empty").params), "model")
    assert "model_index.json" in message


def test_pipelines_other_than_sd_are_refused(tmp_path):
    flux = tmp_path / "flux"
    shutil.copytree(TINY_MODEL_DIR, flux)
    edit_json(flux / "model_index.json", _class_name="FluxPipeline", text_encoder=["transformers", "T5EncoderModel"])
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    (message,) = messages(backend.validate(make_cell(model="flux").params), "model")
    assert "FluxPipeline" in message and "T5EncoderModel" in message


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# Loading


def test_corrupt_weights_raise_model_error_with_the_path(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(TINY_MODEL_DIR, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    assert backend.validate(make_cell(model="broken").params) == []  # configs are fine; weights are not
    with pytest.raises(ModelError, match=str(broken)):
        list(backend.render([make_cell(model="broken")]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_a_user_error(tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cuda"))
    with pytest.raises(GridError, match="--device cpu"):
        list(backend.render([make_cell()]))


def test_close_frees_and_the_next_render_reloads(tmp_path):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    first = render_one(backend)
    backend.close()
    assert backend.prompts is None
    assert np.array_equal(first, render_one(backend))
    backend.close()


def test_load_backend_by_entry_point(tmp_path):
    context = BackendContext(spec_dir=tmp_path)
    assert isinstance(load_backend("diffusers", context), DiffusersBackend)
    with pytest.raises(GridError, match="diffusers"):
        load_backend("nope", context)
