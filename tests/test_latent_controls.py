"""Latent controls (CFG rescale, dynamic thresholding, colour grading, latent mirroring, anti-burn) on
gridgen-tiny: each moves the image the way it should, leaves it alone when off, keeps its own value per cell of
a shared batch, and is named in the image's `parameters` text as its A1111 extension names it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.denoise.controls.colour_grading import ColourGrade, ColourSpace
from gridgen.backends.sd.denoise.controls.dynamic_threshold import scheduled, threshold
from gridgen.backends.sd.denoise.controls.guided import CfgRescale, to_x0_coefficients
from gridgen.backends.sd.denoise.guidance import Guided
from gridgen.metadata import a1111_parameters
from gridgen.params import Registry, coerce
from tests.batch_checks import assert_one_batch_renders_as_alone

BASE = {"model": "gridgen-tiny", "prompt": "a red circle on a blue background", "seed": 3, "steps": 8,
        "sampler": "Euler", "width": 64, "height": 64}
VARIANTS = {
    "plain": {},
    "cfg30": {"cfg_scale": 30},
    "cfg30_mimic7": {"cfg_scale": 30, "mimic_scale": 7},
    "cfg12": {"cfg_scale": 12},
    "cfg12_rescale0": {"cfg_scale": 12, "cfg_rescale": 0.0},
    "mirror_blend": {"mirror_mode": "Blend Average", "mirror_max_step": 1.0},
    "mirror_alternate": {"mirror_mode": "Alternate Steps", "mirror_max_step": 0.5},
    "antiburn1": {"antiburn_steps": 1},
    "antiburn3": {"antiburn_steps": 3},
    **{f"brightness{value}": {"cc_brightness": value} for value in (-2, -1, 1, 2)},
    **{f"saturation{value}": {"cc_saturation": value} for value in (0.25, 0.5, 1.5, 2)},
}


def cell(key: str, **params) -> Cell:
    return Cell(index=0, key=key, coords=(key,), params={**BASE, **params})


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """Every variant, rendered in one batch (a batch renders each cell as alone: see the batch test)."""
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu"))
    cells = [cell(key, **params) for key, params in VARIANTS.items()]
    rendered = {r.cell.key: np.asarray(r.image.convert("RGB"), dtype=np.float32) for r in backend.render(cells)}
    backend.close()
    return rendered


def clipped(image: np.ndarray) -> float:
    return float(((image <= 0) | (image >= 255)).mean())


def luminance(image: np.ndarray) -> float:
    return float((image @ np.array([0.299, 0.587, 0.114])).mean())


def colourfulness(image: np.ndarray) -> float:
    """Mean chroma: the spread between a pixel's largest and smallest channel."""
    return float((image.max(axis=-1) - image.min(axis=-1)).mean())


def asymmetry(image: np.ndarray) -> float:
    return float(np.abs(image - image[:, ::-1]).mean())


# Measured effects


def test_dynamic_thresholding_at_cfg_30_with_mimic_7_clips_fewer_pixels_than_plain_cfg_30(images):
    assert clipped(images["cfg30"]) > 0.02  # the burn it is there to cure
    assert clipped(images["cfg30_mimic7"]) < clipped(images["cfg30"]) / 4


def test_cfg_rescale_brings_the_guided_std_toward_the_conditional_predictions():
    generator = torch.Generator().manual_seed(0)
    cond = torch.randn((2, 4, 8, 8), generator=generator)
    uncond = cond + 0.5 * torch.randn((2, 4, 8, 8), generator=generator)
    scales = torch.tensor([12.0, 12.0]).view(-1, 1, 1, 1)
    guided = uncond + scales * (cond - uncond)
    prediction = Guided(torch.zeros_like(cond), torch.tensor(500), uncond, cond, scales, guided)
    rescaled = CfgRescale([0.7, 0.0], torch.device("cpu"))(prediction)

    def std(t):
        return float(t.std())

    assert abs(std(rescaled[0]) - std(cond[0])) < 0.5 * abs(std(guided[0]) - std(cond[0]))
    assert torch.equal(rescaled[1], guided[1])  # phi 0: the plain guided prediction


def test_cfg_rescale_moves_the_image_and_zero_leaves_it(images, backend_for_rescale):
    assert np.array_equal(images["cfg12_rescale0"], images["cfg12"])
    assert np.abs(backend_for_rescale - images["cfg12"]).mean() > 1


@pytest.fixture(scope="module")
def backend_for_rescale() -> np.ndarray:
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu"))
    (result,) = backend.render([cell("r", cfg_scale=12, cfg_rescale=0.7)])
    backend.close()
    return np.asarray(result.image.convert("RGB"), dtype=np.float32)


def test_cc_brightness_raises_and_lowers_mean_luminance_monotonically(images):
    axis = [images[key] for key in ("brightness-2", "brightness-1", "plain", "brightness1", "brightness2")]
    levels = [luminance(image) for image in axis]
    assert levels == sorted(levels) and len(set(levels)) == 5, levels
    assert levels[-1] - levels[2] > 5 and levels[2] - levels[0] > 5, levels


def test_cc_saturation_raises_colourfulness_monotonically(images):
    axis = [images[key] for key in ("saturation0.25", "saturation0.5", "plain", "saturation1.5", "saturation2")]
    levels = [colourfulness(image) for image in axis]
    assert levels == sorted(levels) and len(set(levels)) == 5, levels
    assert levels[-1] - levels[0] > 5, levels


def _grade(family: str, **values) -> torch.Tensor:
    """One graded x0 of ones (straight source) after a 4-step run's first step, in `family`'s channels."""
    cell = {**Registry().defaults(), "cc_method": "Straight", **values}
    grade = ColourGrade([cell], SimpleNamespace(timesteps=[0] * 4), ColourSpace(family))
    return grade.grade(torch.ones((4, 2, 2)), torch.zeros((4, 2, 2)), cell, 0)


def test_cc_follows_the_channel_meanings_of_sd_and_sdxl_latents():
    sd = _grade("sd", cc_brightness=4, cc_r=4, cc_g=4, cc_b=4)
    assert sd[:, 0, 0].tolist() == [2, 2, 0, 0]  # brightness and green up; red and blue are the negative channels
    assert _grade("sd", cc_saturation=16)[:, 0, 0].tolist() == [1, 2, 2, 2]  # 16 over 4 steps: x2 per step
    assert _grade("sdxl", cc_saturation=16)[:, 0, 0].tolist() == [1, 2, 2, 1]
    red = _grade("sdxl", cc_r=4)[:, 0, 0]
    assert red[1] < 1 and red[2] > 1  # + red: Cr up (channel 1 down), Cb down a little (channel 2 up)


def test_latent_mirroring_makes_the_image_more_symmetric(images):
    assert asymmetry(images["mirror_blend"]) < 0.6 * asymmetry(images["plain"])
    assert np.abs(images["mirror_alternate"] - images["plain"]).mean() > 1


def test_anti_burn_of_one_step_is_the_plain_result_and_more_steps_change_it(images):
    assert np.array_equal(images["antiburn1"], images["plain"])
    assert np.abs(images["antiburn3"] - images["plain"]).mean() > 0.5


# The maths against the extension's definitions


@pytest.mark.parametrize("mode, start, end", [
    ("Constant", 7, 7), ("Linear Down", 7, 1), ("Cosine Down", 7, 1), ("Linear Up", 1, 7), ("Cosine Up", 1, 7),
    ("Power Up", 1, 7), ("Power Down", 7, 1), ("Sawtooth", 1, 1),
])
def test_schedules_run_between_the_minimum_and_the_scale(mode, start, end):
    assert scheduled(7, mode, 1, 0.0, 4) == pytest.approx(start, abs=1e-3)
    assert scheduled(7, mode, 1, 1.0, 4) == pytest.approx(end, abs=1e-3)


def _settings(**changes):
    registry = Registry()
    names = ("separate_feature_channels", "scaling_startpoint", "variability_measure", "threshold_percentile",
             "interpolate_phi")
    return {**{name: registry.params[name].default for name in names}, **changes}


def test_thresholding_at_the_mimic_scale_itself_changes_nothing():
    generator = torch.Generator().manual_seed(1)
    uncond, cond = torch.randn((2, 4, 8, 8), generator=generator)
    plain = uncond + 7 * (cond - uncond)
    for settings in (_settings(), _settings(variability_measure="STD"), _settings(separate_feature_channels=False)):
        assert torch.allclose(threshold(uncond, cond, 7, 7, settings), plain, atol=1e-5)


def test_thresholding_keeps_the_spread_of_the_mimic_scale():
    generator = torch.Generator().manual_seed(2)
    uncond, cond = torch.randn((2, 4, 8, 8), generator=generator)
    mimic = uncond + 7 * (cond - uncond)
    result = threshold(uncond, cond, 7, 30, _settings(variability_measure="STD"))
    centered = (result - result.mean(dim=(1, 2), keepdim=True)).flatten(1).std(dim=1)
    assert torch.allclose(centered, (mimic - mimic.mean(dim=(1, 2), keepdim=True)).flatten(1).std(dim=1), atol=1e-4)
    half = threshold(uncond, cond, 7, 30, _settings(variability_measure="STD", interpolate_phi=0.5))
    assert torch.allclose(half, (result + uncond + 30 * (cond - uncond)) / 2, atol=1e-4)


@pytest.mark.parametrize("schedule, prediction", [("automatic", "epsilon"), ("karras", "epsilon"),
                                                  ("automatic", "v_prediction")])
def test_x0_from_the_unet_input_matches_k_diffusions_denoised(schedule, prediction):
    """Karras sigmas put the timesteps between the training ones, where alpha bar is interpolated."""
    import json

    from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice
    from gridgen.tiny import TINY_MODEL_DIR

    config = json.loads((TINY_MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())
    scheduler = make_scheduler(scheduler_choice("Euler", schedule), {**config, "prediction_type": prediction})
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(3)
    for t in scheduler.timesteps[:4]:
        sample = torch.randn((1, 4, 4, 4), generator=generator) * scheduler.init_noise_sigma
        output = torch.randn((1, 4, 4, 4), generator=generator)
        x = scheduler.scale_model_input(sample, t)
        a, b = to_x0_coefficients(scheduler, t)
        sigma = scheduler.sigmas[scheduler.step_index]
        if prediction == "epsilon":  # k-diffusion's denoised: sample - sigma * eps
            expected = sample - sigma * output
        else:
            expected = output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
        assert torch.allclose(a * x + b * output, expected, atol=1e-4)
        scheduler.step(output, t, sample)


# Batching, spellings, metadata and validation


def test_cells_with_different_controls_share_a_batch_and_render_as_alone(tmp_path, monkeypatch):
    small = {"steps": 6, "width": 32, "height": 32}
    cells = [cell("a", **small), cell("b", **small, cfg_scale=20, mimic_scale=5, mimic_mode="Cosine Down"),
             cell("c", **small, cfg_scale=9, cfg_rescale=0.7, seed=4),
             cell("d", **small, mirror_mode="Alternate Steps", mirror_style="180 Degree Rotation"),
             cell("e", **small, mirror_mode="Blend Average", mirror_style="Horizontal Mirroring", antiburn_steps=3,
                  variability_measure="STD", mimic_scale=4, cfg_scale=12),
             cell("f", **small, cc_brightness=2, cc_saturation=1.5, cc_method="N.Random", cc_scaling="Cos"),
             cell("g", **small, cc_r=-2, cc_contrast=1, cc_method="Multi-Res Abs.", seed=5)]
    assert_one_batch_renders_as_alone(tmp_path, cells, monkeypatch)


@pytest.mark.parametrize("spelling, name, value, expected", [
    ("[DynThres] Mimic Scale", "mimic_scale", "7", 7.0),
    ("[DynThres] Threshold Percentile", "threshold_percentile", "99.5", 99.5),
    ("[DynThres] Mimic Scheduler", "mimic_mode", "Half Cosine Up", "Half Cosine Up"),
    ("[DynThres] CFG Scheduler", "cfg_mode", "linear down", "Linear Down"),
    ("[DynThres] Mimic minimum", "mimic_scale_min", "2", 2.0),
    ("[DynThres] CFG minimum", "cfg_scale_min", "3", 3.0),
    ("[DynThres] Separate Feature Channels", "separate_feature_channels", "False", False),
    ("[DynThres] Scaling Startpoint", "scaling_startpoint", "zero", "ZERO"),
    ("[DynThres] Variability Measure", "variability_measure", "std", "STD"),
    ("[DynThres] Interpolate Phi", "interpolate_phi", "0.5", 0.5),
    ("[DynThres] Power Scheduler Value", "sched_val", "2", 2.0),
    ("CFG Rescale phi", "cfg_rescale", "0.7", 0.7),
    ("guidance_rescale", "cfg_rescale", "0.7", 0.7),
    ("Latent Mirror mode", "mirror_mode", "1", "Alternate Steps"),
    ("Latent Mirror style", "mirror_style", "both", "Horizontal+Vertical Mirroring"),
    ("Maximum steps fraction to mirror at", "mirror_max_step", "0.3", 0.3),
    ("Anti Burn", "antiburn_steps", "3", 3),
    ("[Vec.CC] Brightness", "cc_brightness", "2", 2.0),
    ("[Vec.CC] Saturation", "cc_saturation", "1.5", 1.5),
    ("[Vec.CC] R", "cc_r", "-1", -1.0),
    ("[Adv.CC] Method", "cc_method", "Straight Abs", "Straight Abs."),
    ("[Adv.CC] Scaling", "cc_scaling", "1 - cos", "1 - Cos"),
])
def test_the_extensions_spellings_resolve(spelling, name, value, expected):
    param = Registry().lookup(spelling)
    assert param is not None and param.name == name
    assert coerce(param, value) == expected


def test_parameters_text_names_each_control_as_its_extension_does():
    params = {**Registry().defaults(), "cfg_rescale": 0.7, "mimic_scale": 7.0, "cfg_mode": "Power Up",
              "mirror_mode": "Blend Average", "antiburn_steps": 3, "cc_brightness": 2.0}
    text = a1111_parameters(params)
    for field in ("CFG Rescale phi: 0.7", "Dynamic thresholding enabled: True", "Mimic scale: 7",
                  "CFG mode: Power Up", "Sched Val: 4", "Threshold percentile: 100", "Mirror Mode: Blend Average",
                  "Mirror Style: Vertical Mirroring", "Mirroring Max Step Fraction: 0.25", "Anti Burn: 3",
                  "Vec CC Enabled: True", "Vec CC Brightness: 2", "Vec CC Noise: Straight Abs."):
        assert field in text
    plain = a1111_parameters(Registry().defaults())
    assert not any(name in plain for name in ("Mimic", "Mirror", "Rescale", "Burn", "Vec CC"))


def test_a_quarter_turn_on_a_wide_image_is_refused_naming_mirror_style():
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu"))
    quarter = {"mirror_mode": "Blend Average", "mirror_style": "90 Degree Rotation"}
    problems = backend.validate({**quarter, "width": 64, "height": 32})
    assert [p.param for p in problems] == ["mirror_style"]
    assert "square" in problems[0].message
    assert backend.validate({**quarter, "width": 64, "height": 64}) == []
