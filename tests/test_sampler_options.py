"""A1111's sampler options as params: eta, ENSD, the sigma settings, variation seeds, seed resize, seamless tiling
and styles, each measured on the embedded gridgen-tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from gridgen.backends.base import Cell
from gridgen.backends.sd.denoise import noise, sampler_options
from gridgen.backends.sd.text import styles
from gridgen.backends.sd.text.clip import PromptEncoder
from gridgen.metadata import a1111_parameters
from gridgen.params import Registry
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.test_image_modes import picture, rectangle_mask

STYLES_CSV = ('name,prompt,negative_prompt\n'
              'framed,"a photo of {prompt}, framed",blurry\n'
              'moody,dark and moody,"{prompt}, bright"\n')


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "styles.csv").write_text(STYLES_CSV)
    picture(64, 64).save(tmp_path / "init.png")
    rectangle_mask((64, 64), (8, 8, 56, 56)).save(tmp_path / "mask.png")
    return tmp_path


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 1, "steps": 4, "cfg_scale": 5.0,
            "sampler": "Euler", "model": "gridgen-tiny", "width": 64, "height": 64}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def render(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return np.asarray(result.image.convert("RGB"), dtype=np.float64)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).max() > 2


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).max() <= 1


def test_a1111_spellings_resolve():
    registry = Registry()
    for spelling, name in [("Eta", "eta"), ("ENSD", "eta_noise_seed_delta"), ("Var Seed", "var_seed"),
                           ("Var Strength", "var_seed_strength"), ("Variation seed strength", "var_seed_strength"),
                           ("Sigma Churn", "s_churn"), ("Sigma tmin", "s_tmin"), ("Sigma tmax", "s_tmax"),
                           ("Sigma noise", "s_noise"), ("Tiling", "tiling"), ("Styles", "styles"),
                           ("Seed resize from w", "seed_resize_from_w"), ("subseed", "var_seed"),
                           ("Var. seed", "var_seed"), ("Var. strength", "var_seed_strength"),
                           ("Sigma min", "s_tmin"), ("Sigma max", "s_tmax")]:
        assert registry.lookup(spelling).name == name, spelling


def test_var_seed_strength_0_and_1_are_the_two_seeds_and_half_is_neither(backend):
    seed, other = render(backend, seed=1), render(backend, seed=2)
    assert differ(seed, other)
    assert same(render(backend, seed=1, var_seed=2, var_seed_strength=0.0), seed)
    assert same(render(backend, seed=1, var_seed=2, var_seed_strength=1.0), other)
    half = render(backend, seed=1, var_seed=2, var_seed_strength=0.5)
    assert differ(half, seed) and differ(half, other)


def test_seed_resize_keeps_the_seeds_noise_in_the_middle():
    import torch

    small = noise.start_noise({"seed": 3}, (4, 4, 4), torch.Generator().manual_seed(3), factor=8)
    grown = noise.start_noise({"seed": 3, "seed_resize_from_w": 32, "seed_resize_from_h": 32}, (4, 8, 8),
                              torch.Generator().manual_seed(3), factor=8)
    assert torch.equal(grown[:, 2:6, 2:6], small)
    assert not torch.equal(grown[:, :2], torch.zeros_like(grown[:, :2]))  # the rest is the seed's own draw


def test_ensd_changes_euler_a_but_not_euler(backend):
    assert differ(render(backend, sampler="Euler a"), render(backend, sampler="Euler a", eta_noise_seed_delta=31337))
    assert same(render(backend, sampler="Euler"), render(backend, sampler="Euler", eta_noise_seed_delta=31337))


def test_eta_changes_ddim(backend):
    assert differ(render(backend, sampler="DDIM"), render(backend, sampler="DDIM", eta=1.0))
    assert same(render(backend, sampler="DDIM"), render(backend, sampler="DDIM", eta=0.0))


def test_sigma_settings_change_euler(backend):
    plain = render(backend)
    assert differ(plain, render(backend, s_churn=10.0))
    assert differ(render(backend, s_churn=10.0), render(backend, s_churn=10.0, s_noise=0.5))
    # No noise level of the run lies inside the window: churn has nothing to act on.
    assert same(plain, render(backend, s_churn=10.0, s_tmin=500.0, s_tmax=600.0))


def test_options_a_sampler_ignores_are_warned_naming_those_that_honour_them(backend):
    problems = backend.validate(cell(sampler="LMS", s_churn=1.0, eta=0.5).params)
    by_param = {p.param: p for p in problems}
    assert by_param["s_churn"].severity == "warning" and "Euler" in by_param["s_churn"].message
    assert by_param["eta"].severity == "warning" and "DDIM" in by_param["eta"].message
    assert not [p for p in backend.validate(cell(sampler="Euler", s_churn=1.0).params) if p.param == "s_churn"]
    assert "DPM++ SDE" in sampler_options.honouring("s_noise")


def test_per_sample_options_render_in_a_mixed_batch_as_alone(folder, monkeypatch):
    cells = [cell("a", sampler="Euler a"),
             cell("b", sampler="Euler a", seed=5, eta_noise_seed_delta=31337),
             cell("c", sampler="Euler a", var_seed=9, var_seed_strength=0.3),
             cell("d", sampler="Euler a", seed=2, seed_resize_from_w=48, seed_resize_from_h=80),
             cell("e", sampler="Euler a", styles="framed, moody")]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


@pytest.mark.parametrize("shared", [{"sampler": "DDIM", "eta": 0.7},
                                    {"sampler": "Euler", "s_churn": 5.0, "s_noise": 0.9},
                                    {"tiling": True}])
def test_batch_wide_options_render_in_a_batch_as_alone(folder, monkeypatch, shared):
    cells = [cell("a", **shared), cell("b", seed=4, var_seed=3, var_seed_strength=0.6, **shared),
             cell("c", seed=6, eta_noise_seed_delta=1, **shared)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


def test_batch_wide_options_split_batches(backend):
    keys = {backend.batch_key(cell(**extra).params) for extra in
            [{}, {"tiling": True}, {"sampler": "DDIM", "eta": 0.5}, {"sampler": "DDIM", "eta": 0.2}, {"s_churn": 1.0}]}
    assert len(keys) == 5
    # A value the sampler ignores does not split its batch.
    assert backend.batch_key(cell(eta=0.5).params) == backend.batch_key(cell().params)


def _seams(image: np.ndarray) -> list[tuple[float, float]]:
    """For each axis (left/right, top/bottom): the mean step across the wrap-around seam and the mean step between
    neighbouring pixels inside the image."""
    found = []
    for axis in (1, 0):
        lines = np.moveaxis(image, axis, 0)
        found.append((np.abs(lines[0] - lines[-1]).mean(), np.abs(np.diff(lines, axis=0)).mean()))
    return found


def test_tiling_makes_opposite_edges_continue_each_other(backend):
    # A seed whose picture has no hard edge crossing the wrap-around (a continuing edge is a large step too).
    plain = render(backend, seed=2)
    tiled = render(backend, seed=2, tiling=True)
    for seam, inside in _seams(tiled):
        assert seam <= inside
    for seam, inside in _seams(plain):
        assert seam > 2 * inside  # without tiling the edges do not meet
    assert same(render(backend, seed=2), plain)  # the padding is put back for cells that do not tile


def test_styles_reach_the_encoder_as_a1111_places_them(backend, monkeypatch):
    seen = []
    original = PromptEncoder.conditioning
    monkeypatch.setattr(PromptEncoder, "conditioning", lambda self, prompts, negatives: seen.append(
        ([text for text, _ in prompts], [text for text, _ in negatives])) or original(self, prompts, negatives))
    (result,) = backend.render([cell(styles="framed, moody", negative_prompt="ugly")])
    assert seen == [(["a photo of a red square, framed, dark and moody"], ["ugly, blurry, bright"])]
    assert a1111_parameters(result.cell.params, result.metadata).startswith(
        "a photo of a red square, framed, dark and moody\nNegative prompt: ugly, blurry, bright\n")


def test_unknown_style_is_a_validation_error_naming_the_file(backend, folder):
    (problem,) = [p for p in backend.validate(cell(styles="framed, nope").params) if p.param == "styles"]
    assert problem.severity == "error" and "'nope'" in problem.message and str(folder / "styles.csv") in problem.message


def test_merge_places_the_prompt_as_a1111_does():
    assert styles.merge("{prompt}, oil painting", "a cat") == "a cat, oil painting"
    assert styles.merge("oil painting", "a cat") == "a cat, oil painting"
    assert styles.merge("oil painting", "") == "oil painting"
    assert styles.canonical(["a", "b, c"]) == "a, b, c"


def test_png_parameters_carry_the_options_under_a1111_names():
    text = a1111_parameters({"prompt": "x", "steps": 4, "sampler": "DDIM", "seed": 1, "eta": 0.5,
                             "eta_noise_seed_delta": 31337, "var_seed": 7, "var_seed_strength": 0.25,
                             "seed_resize_from_w": 512, "seed_resize_from_h": 768, "s_churn": 1.0, "s_tmin": 0.5,
                             "s_tmax": 10.0, "s_noise": 1.003, "tiling": True, "image_mask_weight": 0.5})
    fields = dict(item.split(": ", 1) for item in text.splitlines()[-1].split(", "))
    assert fields["Eta DDIM"] == "0.5" and fields["ENSD"] == "31337"
    assert fields["Variation seed"] == "7" and fields["Variation seed strength"] == "0.25"
    assert fields["Seed resize from"] == "512x768" and fields["Tiling"] == "True"
    assert fields["Conditional mask weight"] == "0.5"
    assert (fields["Sigma churn"], fields["Sigma tmin"], fields["Sigma tmax"], fields["Sigma noise"]) == (
        "1", "0.5", "10", "1.003")
    plain = a1111_parameters({"prompt": "x", "seed": 1, "var_seed": 7, "var_seed_strength": 0.0})
    assert "Variation seed" not in plain and "ENSD" not in plain and "Tiling" not in plain


def inpaint(key: str = "0", **params) -> Cell:
    return cell(key, model="gridgen-tiny-inpaint", init_image="init.png", mask="mask.png", denoise=1.0, **params)


def test_image_mask_weight_shows_the_masked_image_to_an_inpainting_model(backend):
    def image(**params):
        (result,) = backend.render([inpaint(**params)])
        return np.asarray(result.image.convert("RGB"), dtype=np.float64)

    hidden = image()
    assert same(image(image_mask_weight=1.0), hidden)
    assert differ(image(image_mask_weight=0.0), hidden)


def test_image_mask_weight_is_per_cell_in_a_batch(folder, monkeypatch):
    cells = [inpaint("a"), inpaint("b", image_mask_weight=0.0), inpaint("c", seed=3, image_mask_weight=0.4)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)
