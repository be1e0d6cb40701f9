"""A1111's "Outpainting mk2" as a baseline: its fall-off exponent and colour variation shape the matched-noise
fill as the script's do, bad values of them are refused by name, and the sides are drawn one after another, each
pass a masked img2img of the previous pass's result, the cells of a batch still denoised together pass by pass."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gridgen.backends.base import Cell
from gridgen.backends.sd.images import outpaint
from tests.batch_checks import assert_one_batch_renders_as_alone, count_denoised
from tests.spec_helpers import problems_of, write_spec
from tests.test_image_modes import picture, pixels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("outpaint-mk2")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 3, "sampler": "Euler", "cfg_scale": 5.0, "mask_blur": 4,
            "init_image": "init.png", "denoise": 0.8, "outpaint": "left 32, right 32", "outpaint_method": "mk2"}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def left_strip_of_fill(**settings) -> np.ndarray:
    params = {"outpaint": "left 32, right 32", "outpaint_method": "mk2", "mask_blur": 4, **settings}
    return pixels(outpaint.canvas(picture(64, 64), params).image)[:, :32] / 255


def high_frequency_share(strip: np.ndarray) -> float:
    """The share of the strip's (grey, mean-free) spectral energy above half the Nyquist frequency on either axis."""
    grey = strip.mean(axis=2)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    high = np.maximum(*np.meshgrid(np.abs(np.fft.fftfreq(grey.shape[1])), np.abs(np.fft.fftfreq(grey.shape[0])))) \
        > 0.25
    return float(power[high].sum() / power.sum())


def chroma_spread(colours: np.ndarray) -> float:
    """How far colours (N, 3) stray from grey-axis-parallel shifts of one another: the mean std of each channel's
    difference from the pixel's mean."""
    return float((colours - colours.mean(axis=1, keepdims=True)).std(axis=0).mean())


# The two settings


def test_a_higher_falloff_exponent_leaves_less_fine_detail_in_the_fill():
    # The exponent is the power of the picture's spectral magnitudes: the broad scales (large magnitudes) gain on
    # the fine ones as it rises, hence the script's "lower = higher detail".
    shares = [high_frequency_share(left_strip_of_fill(outpaint_falloff=q)) for q in (0, 0.5, 1, 2)]
    assert all(a > b for a, b in zip(shares, shares[1:], strict=False)), shares
    assert shares[0] > 5 * shares[-1], shares
    assert np.array_equal(left_strip_of_fill(), left_strip_of_fill(outpaint_falloff=1.0))  # the script's default


def test_colour_variation_spreads_the_fills_colours():
    # A picture whose colours lie on one line (a tinted grey pattern): grey starting noise keeps the fill on it,
    # coloured noise moves each channel alone.
    grey = pixels(picture(64, 64))[..., 2:] / 255
    tinted = Image.fromarray((grey * np.array([0.9, 0.6, 0.3]) * 255 + np.array([12, 25, 50])).round()
                             .astype(np.uint8), "RGB")
    spreads = {}
    for variation in (0, 0.5):
        params = {"outpaint": "left 32", "outpaint_method": "mk2", "outpaint_color_variation": variation}
        spreads[variation] = chroma_spread(pixels(outpaint.canvas(tinted, params).image)[:, :32].reshape(-1, 3))
    original = chroma_spread(pixels(tinted).reshape(-1, 3))
    assert spreads[0] < 1.25 * original, (spreads, original)
    assert spreads[0.5] > 1.8 * spreads[0], spreads


@pytest.mark.parametrize(("line", "name", "expected"), [
    ("outpaint_falloff: -0.5", "outpaint_falloff", ">= 0, <= 4"),
    ("noise_q: 9", "outpaint_falloff", ">= 0, <= 4"),
    ("outpaint_color_variation: 1.5", "outpaint_color_variation", ">= 0, <= 1"),
    ("color variation: lots", "outpaint_color_variation", "a number"),
])
def test_impossible_settings_are_refused_by_name(tmp_path, line, name, expected):
    spec = write_spec(tmp_path, f"""
        grid:
          title: mk2
          params:
            model: gridgen-tiny
            init_image: init.png
            outpaint: left 32
            outpaint_method: mk2
            {line}
        axes:
          seed: 1, 2
        """)
    (problem,) = [p for p in problems_of(spec) if name in p.message]
    assert expected in problem.message, problem.message
    assert problem.location.line == 8


def test_only_mk2_reads_the_settings_and_they_do_not_split_batches(backend, monkeypatch):
    batches = count_denoised(monkeypatch)
    gradient = [cell(key=str(q), outpaint_method="gradient", outpaint_falloff=q, steps=2) for q in (1.0, 3.0)]
    first, second = backend.render(gradient)
    assert batches == [1] and np.array_equal(pixels(first.image), pixels(second.image))
    # mk2's fill is per cell, so cells with their own settings denoise together and differ in the new area.
    mk2 = [cell(key="a", outpaint_falloff=0.2), cell(key="b", outpaint_falloff=3.0, outpaint_color_variation=0.8)]
    assert len({backend.batch_key(dict(c.params)) for c in mk2}) == 1
    low, high = (pixels(r.image) for r in backend.render(mk2))
    assert batches == [1, 2]
    assert np.abs(low[:, :32] - high[:, :32]).mean() > 3


# Sides one after another


def test_passes_go_left_right_up_down_and_say_what_each_lacks_of_the_final_canvas():
    params = {"init_image": "init.png", "outpaint": "down 8, up 16, right 24, left 32", "outpaint_method": "mk2"}
    assert [next(side for side, px in sides.items() if px) for sides in outpaint.passes(params)] == [
        "left", "right", "up", "down"]
    assert outpaint.still_to_come(params) == ((24, 24), (0, 24), (0, 8), (0, 0))
    assert outpaint.pass_size((120, 88), (24, 24), 8) == (96, 64)
    assert outpaint.still_to_come({**params, "outpaint_method": "gradient"}) == ((0, 0),)


def test_two_sides_are_two_passes_the_second_over_the_firsts_result(backend, folder, monkeypatch):
    from gridgen.backends.sd.kinds import edit

    sizes = []
    original = edit.denoise
    monkeypatch.setattr(edit, "denoise", lambda parts, prepared, *rest: sizes.append(prepared.pixels.shape[2:])
                        or original(parts, prepared, *rest))
    (both,) = backend.render([cell(key="both")])
    assert sizes == [(64, 96), (64, 128)]
    assert both.image.size == (128, 64)
    # The first pass is the left side alone; the second redraws the right side of what it left, from the seed
    # afresh, as a run of the script on that image does: the two-side cell is exactly that chain of one-side cells.
    (left,) = backend.render([cell(key="left", outpaint="left 32")])
    assert np.array_equal(pixels(both.image)[:, :32], pixels(left.image)[:, :32])
    left.image.save(folder / "left-done.png")
    (chained,) = backend.render([cell(key="chained", outpaint="right 32", init_image="left-done.png")])
    assert np.array_equal(pixels(both.image), pixels(chained.image))
    sizes.clear()
    (poor,) = backend.render([cell(key="poor", outpaint_method="poor_man")])
    assert sizes == [(64, 128)] and poor.image.size == (128, 64)  # the other methods draw every side at once


def test_the_original_stays_exact_where_no_pass_redraws_it(backend):
    (result,) = backend.render([cell(outpaint="left 16, up 16", mask_blur=0)])
    assert result.image.size == (80, 80)
    assert np.array_equal(pixels(result.image)[16:, 16:], pixels(picture(64, 64)))
    (blurred,) = backend.render([cell(outpaint="left 16, up 16")])
    assert np.array_equal(pixels(blurred.image)[40:, 40:], pixels(picture(64, 64))[24:, 24:])


def test_cells_with_their_own_sides_and_passes_in_step_render_in_one_batch_as_alone(backend, folder, monkeypatch):
    # Two passes each, the first lacking 16 px down of the final canvas: one batch, pass by pass.
    cells = [cell(key="a", outpaint="left 32, down 16", sampler="Euler a"),
             cell(key="b", outpaint="right 32, up 16", init_image="other.png", seed=4, sampler="Euler a")]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)
    # The same final size in three passes denoises apart.
    three = cell(outpaint="left 16, right 16, up 16", sampler="Euler a")
    assert backend.batch_key(dict(three.params)) != backend.batch_key(dict(cells[0].params))


def test_attention_regions_laid_out_at_one_size_are_refused_with_mk2s_passes(backend):
    regional = {"regions": "Columns", "region_calc": "attention", "prompt": "a red square BREAK a blue square"}
    problems = [p for p in backend.validate({**cell().params, **regional}) if p.param == "outpaint_method"]
    assert problems and "region_calc latent" in problems[0].message
    assert not [p for p in backend.validate({**cell(outpaint="left 32").params, **regional})
                if p.param == "outpaint_method"]  # one side is one pass
