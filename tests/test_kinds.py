"""The kind table and the denoising recipe: one table of kinds that the `pipeline` param and the channel facts
follow, the `pipeline` param choosing the kind a cell renders as, params stage-derived, and the recipe's
per-sample draws and per-step hooks."""

from __future__ import annotations

import torch

from gridgen.backends import BackendContext
from gridgen.backends.diffusers_backend import POST_PARAMS, DiffusersBackend
from gridgen.backends.sd.denoise.recipe import Recipe, scheduler_for
from gridgen.backends.sd.kinds import registry
from gridgen.backends.sd.kinds.channels import CHANNELS, KIND_BY_CHANNELS
from gridgen.params import PIPELINE_KINDS, Registry
from gridgen.tiny import TINY_MODEL_DIR
from tests.test_image_modes import picture


def test_one_table_names_every_kind_the_pipeline_param_and_the_channels_know():
    assert set(registry.KINDS) == set(CHANNELS) == set(PIPELINE_KINDS) - {"auto"}
    assert set(KIND_BY_CHANNELS.values()) <= set(registry.KINDS)
    assert registry.PARAM_KINDS == {"depth_map": {"depth2img"}, "depth_model": {"depth2img"},
                                    "image_cfg_scale": {"instruct-pix2pix"}}


def test_the_pipeline_param_picks_the_kind_a_cell_renders_as(tmp_path):
    picture(64, 64).save(tmp_path / "init.png")
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path))
    kind = lambda **params: backend._kind({**Registry().defaults(), **params})[0].name  # noqa: E731
    assert kind() == "txt2img" and kind(init_image="init.png") == "img2img"
    assert kind(pipeline="img2img") == "img2img" and kind(init_image="init.png", pipeline="txt2img") == "txt2img"
    assert kind(model="gridgen-tiny-inpaint") == "inpaint" and kind(model="gridgen-tiny-x4") == "x4-upscaler"
    assert kind(pipeline="inpaint") == "txt2img"  # a pipeline the UNet cannot run is refused, not followed

    def problems(**params):
        return {(p.param, p.message.split(";")[0]) for p in backend.validate(params)}

    assert problems(init_image="init.png", pipeline="txt2img") == {
        ("pipeline", "pipeline txt2img draws from noise and reads no init_image")}
    assert problems(pipeline="img2img") == {("init_image", "pipeline img2img edits a given image")}
    assert problems(init_image="init.png", pipeline="img2img") == set()


def test_post_params_come_from_each_params_stage():
    stages = {param.name: param.stage for param in Registry()}
    assert POST_PARAMS == {name for name, stage in stages.items() if stage in ("plan", "post", "output")}
    assert {"upscaler", "sam_prompt", "noise_level", "format", "prompt_replace"} <= POST_PARAMS
    assert not {"prompt", "seed", "denoise", "init_image"} & POST_PARAMS


def _scheduler():
    config = {**scheduler_config_of_tiny(), "prediction_type": "epsilon"}
    return scheduler_for({"sampler": "Euler a", "schedule": "automatic"}, config)


def scheduler_config_of_tiny():
    from diffusers import EulerDiscreteScheduler

    return dict(EulerDiscreteScheduler.load_config(TINY_MODEL_DIR / "scheduler"))


def _run(seeds, hooks=()):
    recipe = Recipe(_scheduler(), seeds, torch.device("cpu"), hooks)
    recipe.full_schedule(5)
    latents = recipe.start_from_noise((4, 8, 8))
    return recipe.run(lambda x, t: 0.1 * x, latents)


def test_the_recipe_draws_per_sample_so_a_row_is_the_same_alone_or_in_a_batch():
    together = _run([3, 7, 11])
    for row, seed in enumerate([3, 7, 11]):
        assert torch.equal(_run([seed])[0], together[row])


def test_per_step_hooks_see_every_step_and_act_on_their_own_rows():
    seen = []

    def hold_row_one(step):
        seen.append(step.index)
        latents = step.latents.clone()
        latents[1] = 0  # a per-sample control: only the second cell of the batch
        return latents

    plain, hooked = _run([1, 2]), _run([1, 2], hooks=[hold_row_one])
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(hooked[0], plain[0]) and torch.count_nonzero(hooked[1]) == 0
