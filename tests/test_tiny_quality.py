"""The gridgen-tiny quality bars, asserted on the gridgen-tiny weights shipped in the package.

txt2img images are rendered through gridgen's own diffusers backend, the way a grid renders them,
and read back by `gridgen.tiny.evaluate`'s color and shape classifier; the inpaint, x4 and SAM
variants run through their libraries' own pipelines (`gridgen.tiny.evaluate_variants`).
`python -m gridgen.tiny.evaluate` and `python -m gridgen.tiny.evaluate_variants` print the same
figures.
"""

from __future__ import annotations

import pytest

from gridgen.backends.sd.denoise.samplers import SAMPLERS
from gridgen.tiny import TINY_MODEL_DIR
from gridgen.tiny import data as shapes
from gridgen.tiny import evaluate as ev
from gridgen.tiny import evaluate_variants as evv

CASES = ev.cases()  # 6 colors x 3 shapes x 2 seeds


@pytest.fixture(scope="module")
def backend():
    instance = ev.make_backend(TINY_MODEL_DIR)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def at_cfg(backend):
    """Scores of the 36 cells at a CFG scale (DPM++ 2M, 20 steps), each rendered once per module."""
    cache: dict[float, ev.Scores] = {}

    def scores(cfg: float) -> ev.Scores:
        if cfg not in cache:
            cache[cfg] = ev.score(CASES, ev.render(backend, TINY_MODEL_DIR, CASES, cfg_scale=cfg))
        return cache[cfg]

    return scores


def test_the_classifier_reads_the_data_set_exactly():
    for sample in shapes.make_batch(2024, 300):
        reading = ev.classify(sample.image)
        assert (reading.color, reading.shape, reading.background) == (sample.color, sample.shape, sample.background)


def test_cfg_7_draws_the_prompted_color_and_shape(at_cfg):
    scores = at_cfg(7.0)
    assert len(CASES) == 36
    assert scores.color >= ev.COLOR_BAR, f"color accuracy {scores.color:.1%}"
    assert scores.shape >= ev.SHAPE_BAR, f"shape accuracy {scores.shape:.1%}"


def test_cfg_0_is_the_unconditional_prediction_near_chance(at_cfg):
    scores = at_cfg(0.0)
    assert scores.color <= ev.UNCOND_COLOR_BAR, f"color accuracy at CFG 0 {scores.color:.1%}"


def test_guidance_saturates_the_foreground(at_cfg):
    assert at_cfg(7.0).saturation > at_cfg(1.0).saturation


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_draws_the_prompted_color_at_its_usual_step_count(backend, sampler):
    items = ev.sampler_cases()
    scores = ev.score(items, ev.render(backend, TINY_MODEL_DIR, items, sampler=sampler.name,
                                       steps=sampler.usual_steps))
    assert scores.color >= ev.SAMPLER_COLOR_BAR, f"{sampler.name}: color accuracy {scores.color:.1%}"


@pytest.mark.parametrize("sampler, scheduler_class, config", [
    ("LMS", "LMSDiscreteScheduler", {}),
    ("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
])
def test_the_multistep_samplers_render_what_diffusers_own_pipeline_renders(backend, sampler, scheduler_class, config):
    """LMS and PLMS are judged at 50 steps (their usual count) because at 20 they overshoot with this
    model; this shows that is the method, not gridgen's mapping: at 20 steps gridgen's images equal
    those of diffusers' StableDiffusionPipeline with the same scheduler."""
    import diffusers
    import numpy as np
    import torch

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32)
    pipe.scheduler = getattr(diffusers, scheduler_class).from_config(pipe.scheduler.config, **config)
    pipe.set_progress_bar_config(disable=True)
    items = ev.sampler_cases()[:4]
    ours = ev.render(backend, TINY_MODEL_DIR, items, sampler=sampler, steps=ev.STEPS)
    for case, image in zip(items, ours, strict=True):
        reference = pipe(case.prompt, num_inference_steps=ev.STEPS, guidance_scale=7.0, height=64, width=64,
                         generator=torch.Generator().manual_seed(case.seed), output_type="np").images[0]
        reference = (reference * 255).round()
        assert np.abs(reference - image.astype(np.float64)).mean() <= 0.5, case.prompt


def test_a_cell_renders_the_same_alone_and_in_a_batch_of_8(backend):
    assert ev.batch_equivalence(backend, TINY_MODEL_DIR) <= ev.BATCH_MAE_BAR


# The variants


def test_inpaint_removes_the_masked_shape_and_fills_with_the_prompted_color():
    figures = evv.inpaint_figures()
    assert figures.removed >= evv.REMOVE_BAR, f"masked pixels near the background: {figures.removed:.1%}"
    assert figures.fill_color >= evv.FILL_COLOR_BAR, f"fills in the prompted color: {figures.fill_color:.1%}"


@pytest.fixture(scope="module")
def upscale_figures():
    return evv.upscale_figures()


def test_x4_upscaler_beats_bicubic_by_1_db(upscale_figures):
    gain = upscale_figures.psnr_model - upscale_figures.psnr_bicubic
    assert gain >= evv.PSNR_GAIN_BAR, f"PSNR gain over bicubic at noise_level 20: {gain:+.2f} dB"


def test_x4_vae_alone_reconstructs_closer_than_the_upscaler_and_bicubic(upscale_figures):
    """The VAE round trip of the 64 px originals is the ceiling the upscaler's decoded output works under."""
    figures = upscale_figures
    assert figures.psnr_vae > max(figures.psnr_model, figures.psnr_bicubic), figures


def test_x4_upscaler_output_changes_monotonically_with_the_noise_level(upscale_figures):
    change = upscale_figures.change_by_level
    rising = all(a < b for a, b in zip(change, change[1:], strict=False))
    assert change[0] == 0 and rising, f"change from noise_level 0 by level: {change}"


def test_sam_segments_the_shape_from_a_point_and_from_a_box():
    figures = evv.sam_figures()
    assert figures.point_iou >= evv.SAM_IOU_BAR, f"mean IoU from a point: {figures.point_iou:.3f}"
    assert figures.box_iou >= evv.SAM_IOU_BAR, f"mean IoU from a box: {figures.box_iou:.3f}"
