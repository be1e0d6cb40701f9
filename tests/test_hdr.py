"""HDR brackets and colour grading's Alt. mode on gridgen-tiny: the merge keeps highlights and shadows that single
brackets lose, the brackets are one seed's exposures rendered in one batch with other cells, a 16-bit result is a
real 16-bit PNG that A1111's PNG Info reads, bad bracket counts are located errors, and Alt. grades differently
from the default mode in the same direction."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import png
import pytest
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.hdr import fusion
from gridgen.cli import main
from gridgen.metadata import a1111_parameters
from gridgen.params import Registry, coerce
from tests.batch_checks import assert_one_batch_renders_as_alone, count_denoised
from tests.spec_helpers import problems_of, write_spec

BASE = {"model": "gridgen-tiny", "prompt": "a red circle on a blue background", "seed": 3, "steps": 8,
        "sampler": "Euler", "width": 64, "height": 64}
HDR = {"hdr_brackets": 5, "hdr_gap": 1.25, "hdr_gamma": 1.0}  # gamma 1: the fusion as OpenCV makes it
VARIANTS = {
    "plain": {},
    "hdr": HDR,
    "other_seed": {"seed": 11, "cc_brightness": 1},
    "brightness2": {"cc_brightness": 2},
    "brightness-2": {"cc_brightness": -2},
    "alt2": {"cc_brightness": 2, "cc_alt": True},
    "alt-2": {"cc_brightness": -2, "cc_alt": True},
}


def cell(key: str, **params) -> Cell:
    return Cell(index=0, key=key, coords=(key,), params={**BASE, **params})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every variant in one render call, and how many rows each denoising batch held."""
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu", max_batch=16))
    batches: list[int] = []
    original = backend._denoise
    backend._denoise = lambda batch: batches.append(len(batch)) or original(batch)
    results = {r.cell.key: r for r in backend.render([cell(key, **params) for key, params in VARIANTS.items()])}
    backend.close()
    return results, batches


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def clipped(image: np.ndarray) -> float:
    """The fraction of pixels with a channel at black or white."""
    return float(((image <= 0) | (image >= 255)).any(axis=-1).mean())


def shadow_detail(image: np.ndarray, shadows: np.ndarray) -> float:
    """The spread of luminance (its standard deviation) over the `shadows` pixels: how much is told apart there."""
    return float(luminance(image)[shadows].std())


def darkest_decile(image: np.ndarray) -> np.ndarray:
    level = luminance(image)
    return level <= np.quantile(level, 0.1)


def brackets_of(result) -> list[np.ndarray]:
    return [pixels(result.files[f"bracket_{number}"]) for number in range(1, 6)]


def test_the_merge_clips_less_than_the_brightest_bracket_and_shows_more_shadow_detail_than_the_darkest(rendered):
    results, _ = rendered
    hdr = results["hdr"]
    merged, brackets = pixels(hdr.image), brackets_of(hdr)
    assert clipped(brackets[-1]) > 0.2  # the brightest bracket blows out: the merge is there to recover it
    assert clipped(merged) < clipped(brackets[-1]) / 2
    shadows = darkest_decile(brackets[0])
    assert shadow_detail(merged, shadows) > 1.5 * shadow_detail(brackets[0], shadows)
    # A fusion, not one of the brackets: it differs from each, and each pixel's luminance lies between the
    # brackets' (bar the pyramid's overshoot at a few edge pixels).
    assert min(float(np.abs(merged - bracket).mean()) for bracket in brackets) > 10
    levels = np.stack([luminance(bracket) for bracket in brackets])
    merged_level = luminance(merged)
    assert ((merged_level >= levels.min(axis=0) - 2) & (merged_level <= levels.max(axis=0) + 2)).mean() > 0.98


def test_brackets_run_darkest_first_and_the_middle_one_is_the_cell_without_hdr(rendered):
    results, _ = rendered
    levels = [float(luminance(image).mean()) for image in brackets_of(results["hdr"])]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 50, levels
    # Same seed, exposure 0: the middle bracket is the plain render, to the bit.
    assert np.array_equal(brackets_of(results["hdr"])[2], pixels(results["plain"].image))


def test_the_brackets_render_in_one_batch_with_the_other_cells(rendered):
    _, batches = rendered
    # 5 brackets (the middle one is the plain cell's render, shared) + the other 5 variants, all in one batch.
    assert batches == [len(VARIANTS) - 1 + 5 - 1]


def test_an_hdr_cell_alone_and_in_a_mixed_batch_render_the_same(rendered, monkeypatch):
    results, _ = rendered
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu", cpu_shards=2))
    batches = count_denoised(monkeypatch)
    (alone,) = backend.render([cell("hdr", **HDR)])
    backend.close()
    assert batches == [5]
    mixed = results["hdr"]
    for name, image in alone.files.items():  # the batch-invariance bound every base render keeps
        assert np.abs(pixels(image) - pixels(mixed.files[name])).max() <= 1, name
    for result in (alone, mixed):  # the merge adds nothing that depends on the batch
        brackets = [result.files[f"bracket_{number}"] for number in range(1, 6)]
        assert np.array_equal(pixels(fusion.merge(brackets, 1.0, 8)[0]), pixels(result.image))
    # Mertens weights can turn a one-level bracket difference into a few levels at a handful of pixels.
    apart = np.abs(pixels(alone.image) - pixels(mixed.image)).max(axis=-1)
    assert (apart > 1).mean() < 0.005 and apart.max() <= 4


def test_a_cell_with_more_brackets_than_the_batch_holds_still_renders_them_together(monkeypatch):
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu", max_batch=2))
    batches = count_denoised(monkeypatch)
    results = list(backend.render([cell("a", seed=5), cell("hdr", seed=6, hdr_brackets=3, steps=4), cell("b", seed=7)]))
    backend.close()
    assert sorted(r.cell.key for r in results) == ["a", "b", "hdr"]
    assert batches == [1, 3, 1]
    (hdr,) = [r for r in results if r.cell.key == "hdr"]
    assert sorted(hdr.files) == ["bracket_1", "bracket_2", "bracket_3"]


def test_fusion_quantises_16_bit_pixels_whose_8_bit_rounding_is_the_preview():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :, None] * np.ones((16, 1, 3), np.float32)
    brackets = [Image.fromarray(np.clip((ramp * gain + rng.normal(0, 0.01, ramp.shape)) * 255, 0, 255)
                                .astype(np.uint8)) for gain in (0.5, 1.0, 2.0)]
    preview, deep = fusion.merge(brackets, gamma=1.0, depth=16)
    assert deep.dtype == np.uint16 and deep.shape == (16, 32, 3)
    assert len(np.unique(deep)) > 256  # more levels than 8 bits hold
    assert np.abs(np.asarray(preview, dtype=np.float32) - deep / 257).max() <= 0.5
    brighter, _ = fusion.merge(brackets, gamma=1.6, depth=8)
    assert np.asarray(brighter, dtype=np.float32).mean() > np.asarray(preview, dtype=np.float32).mean()


HDR_GRID = """
grid:
  title: hdr
  format: png
  params: {model: gridgen-tiny, prompt: a red circle on a blue background, steps: 4, sampler: Euler,
           width: 64, height: 64, seed: 3, hdr_gap: 1.5}
axes:
  depth:
    title: Depth
    values:
      deep: {title: 16 bit, params: {Vec HDR Brackets: 3, hdr_depth: 16bpc}}
      flat: {title: 8 bit, params: {hdr_brackets: 3, hdr_depth: 8}}
"""


def test_a_16_bit_result_is_a_16_bit_png_whose_parameters_read_back_and_its_brackets_lie_beside_it(tmp_path):
    spec = write_spec(tmp_path, HDR_GRID)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    entries = {e["key"]: e for e in map(json.loads, (out / "journal.jsonl").read_text().splitlines())}
    deep, flat = entries["deep"], entries["flat"]
    _, _, _, info = png.Reader(filename=str(out / deep["file"])).read()
    assert info["bitdepth"] == 16 and info["planes"] == 3
    assert cv2.imread(str(out / deep["file"]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert png.Reader(filename=str(out / flat["file"])).read()[3]["bitdepth"] == 8
    with Image.open(out / deep["file"]) as image:  # as A1111's PNG Info reads it
        parameters = image.info["parameters"]
        assert json.loads(image.info["gridgen"])["key"] == "deep"
    assert parameters == deep["parameters"]
    assert "Vec HDR Brackets: 3, Vec HDR Gaps: 1.5, Vec HDR Gamma: 1.2, Vec HDR Depth: 16bpc" in parameters
    with Image.open(out / deep["thumb"]) as thumb:
        assert thumb.format == "WEBP" and thumb.mode == "RGB"
    assert sorted(deep["files"]) == ["bracket_1", "bracket_2", "bracket_3"]
    for path in deep["files"].values():
        assert (out / path).is_file() and path.startswith(deep["file"].removesuffix(".png"))
    # The 16-bit file holds the 8-bit image's pixels, and more.
    sixteen = cv2.cvtColor(cv2.imread(str(out / deep["file"]), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    with Image.open(out / flat["file"]) as eight:
        assert np.abs(sixteen / 257 - np.asarray(eight, dtype=np.float32)).max() <= 1


@pytest.mark.parametrize("count", ["4", "11"])
def test_a_bracket_count_that_is_not_odd_3_to_9_is_a_located_error(tmp_path, count):
    spec = write_spec(tmp_path, f"""
        grid: {{title: t, params: {{model: gridgen-tiny}}}}
        axes:
          hdr:
            title: HDR
            values:
              a: {{title: a, params: {{hdr_brackets: 3}}}}
              b: {{title: b, params: {{hdr_brackets: {count}}}}}
        """)
    (problem,) = problems_of(spec)
    assert problem.location.line == 7 and problem.location.file.name == "grid.yaml"
    assert "hdr_brackets" in problem.message and "3, 5, 7 or 9" in problem.message


def test_hdr_on_a_later_stage_is_refused_naming_hdr_brackets():
    backend = DiffusersBackend(BackendContext(spec_dir=Path("."), device="cpu"))
    problems = backend.validate({**BASE, **HDR, "out_width": 128})
    assert [p.param for p in problems] == ["hdr_brackets"] and "out_width" in problems[0].message
    assert backend.validate({**BASE, **HDR}) == []


@pytest.mark.parametrize(("spelling", "name", "value", "expected"), [
    ("[Vec.CC] Alt.", "cc_alt", "True", True),
    ("Vec CC Alt", "cc_alt", "false", False),
    ("Vec HDR Brackets", "hdr_brackets", "off", 1),
    ("hdr_brackets", "hdr_brackets", "7", 7),
    ("Vec HDR Gaps", "hdr_gap", "2", 2.0),
    ("Vec HDR Depth", "hdr_depth", "16bpc", 16),
])
def test_the_extensions_spellings_resolve(spelling, name, value, expected):
    param = Registry().lookup(spelling)
    assert param is not None and param.name == name
    assert coerce(param, value) == expected


def test_parameters_text_names_alt_and_hdr_as_the_extension_does():
    defaults = Registry().defaults()
    text = a1111_parameters({**defaults, "cc_brightness": 2.0, "cc_alt": True, **HDR})
    assert "Vec CC Enabled: True, Vec CC Alt: True, Vec CC Brightness: 2" in text
    assert "Vec HDR Brackets: 5, Vec HDR Gaps: 1.25" in text
    assert "Vec HDR" not in a1111_parameters(defaults)


# Alt. mode


def test_alt_mode_differs_from_the_default_mode_and_keeps_the_brightness_direction(rendered):
    results, _ = rendered
    image = {key: pixels(results[key].image) for key in ("plain", "brightness2", "brightness-2", "alt2", "alt-2")}
    level = {key: float(luminance(value).mean()) for key, value in image.items()}
    assert level["alt-2"] + 5 < level["plain"] < level["alt2"] - 5, level
    for sign in ("2", "-2"):
        assert np.abs(image[f"alt{sign}"] - image[f"brightness{sign}"]).mean() > 2


def test_alt_mode_cells_render_in_a_batch_as_alone(tmp_path, monkeypatch):
    small = {"steps": 4}
    assert_one_batch_renders_as_alone(tmp_path, [
        cell("a", **small, cc_brightness=2, cc_alt=True),
        cell("b", **small, seed=9, cc_r=2, cc_alt=True, cc_method="Cross"),
        cell("c", **small, seed=10, cc_saturation=2),
        cell("d", **small, seed=12),
    ], monkeypatch)
