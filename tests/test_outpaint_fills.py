"""Outpainting's other fills and A1111's mk2 baseline: `latent_noise` starts the new area from fresh latents,
`lama:<file>` fills it with a LaMa model (found and checked as the SAM edit's LaMa files are, and kept inside the
viewer's root), mk2 fills it with noise matched to the image and redraws it under a grown, blurred mask; and a
cell denoised under a change map saves that map as its `change_map` file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends.base import Cell
from gridgen.backends.sd.images import outpaint
from gridgen.backends.sd.images.matched_noise import matched_noise
from gridgen.params import Registry
from gridgen.runner import RunOptions, execute, prepare
from gridgen.viewer import boundary
from tests.batch_checks import assert_one_batch_renders_as_alone
from tests.spec_helpers import write_spec
from tests.test_image_modes import picture, pixels, rectangle_mask

ORIGINAL = np.s_[:, 32:96]  # the init image inside a canvas grown by 32 px left and right
NEW_AREA = np.r_[0:32, 96:128]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Init images, a change map, a mask, a random-weight LaMa and an upscaler file that is no inpainter."""
    from gridgen.backends.sd.stages import upscale_models

    root = tmp_path_factory.mktemp("outpaint-fills")
    picture(64, 64).save(root / "init.png")
    picture(64, 64, seed=3).save(root / "other.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), "L").save(root / "ramp.png")
    rectangle_mask((64, 64), (16, 20, 40, 44)).save(root / "mask.png")
    upscale_models._loader()  # spandrel imports only through gridgen's loader
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    torch.save(LaMa(in_nc=4).state_dict(), root / "lama.pth")
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), root / "compact.pth")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 8, "sampler": "Euler", "cfg_scale": 5.0, "mask_blur": 4,
            "init_image": "init.png", "denoise": 1.0, "outpaint": "left 32, right 32"}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params})


def render(backend, **params) -> np.ndarray:
    (result,) = backend.render([cell(**params)])
    return pixels(result.image)


# Parsing


@pytest.mark.parametrize(("raw", "value"), [("Telea", "opencv-telea"), ("latent noise", "latent_noise"),
                                            ("LaMa: models/big-lama.pt", "lama:models/big-lama.pt")])
def test_fills_read_in_their_spellings(raw, value):
    assert Registry().lookup("outpaint_fill").choose(raw) == value


@pytest.mark.parametrize("raw", ["Outpainting mk2", "outpainting_mk_2", "MK2"])
def test_mk2_reads_as_the_script_is_named(raw):
    assert Registry().lookup("outpaint_method").choose(raw) == "mk2"


@pytest.mark.parametrize(("raw", "words"), [("lama:", "needs a model file"), ("blur", "lama:<file>")])
def test_a_bad_fill_says_what_to_write(raw, words):
    with pytest.raises(ValueError, match=words):
        outpaint.canonical_fill(raw)


# mk2's matched noise


@pytest.mark.parametrize("tint", [(1.0, 0.3, 0.2), (0.2, 0.4, 1.0)])
def test_matched_noise_takes_the_colours_of_the_image_it_extends(tint):
    image = np.asarray(picture(64, 64), dtype=np.float64) / 255 * np.array(tint)
    canvas = np.pad(image, ((0, 0), (32, 32), (0, 0)), mode="edge")
    new_area = np.ones(canvas.shape[:2], dtype=bool)
    new_area[ORIGINAL] = False
    filled = matched_noise(canvas, new_area)
    assert np.array_equal(filled[ORIGINAL], image)
    fill, known = filled[new_area], image.reshape(-1, 3)
    assert np.abs(fill.mean(axis=0) - known.mean(axis=0)).max() < 0.01
    assert np.abs(fill.std(axis=0) - known.std(axis=0)).max() < 0.01
    # Noise, not the edge stretched: every column of the new strips varies down its length as the image does.
    assert filled[:, NEW_AREA].std(axis=0).mean() > 0.5 * image.std(axis=0).mean()


def test_the_mk2_canvas_is_matched_noise_under_a_grown_blurred_mask():
    params = {"outpaint": "left 32, right 32", "outpaint_method": "mk2", "mask_blur": 4}
    built = outpaint.canvas(picture(64, 64), params)
    mask = np.asarray(built.mask)
    assert mask[:, NEW_AREA].min() > 0 and mask[:, 34].max() > 128  # grown past the old border
    assert mask[:, 48:80].max() == 0 and 0 < mask[:, 37].max() < 255  # blurred, the middle untouched
    noise = matched_noise(np.pad(np.asarray(picture(64, 64)), ((0, 0), (32, 32), (0, 0)), mode="edge") / 255,
                          np.asarray(built.new_area) > 0)
    assert np.abs(pixels(built.image) - (noise * 255).round()).max() == 0


def test_mk2_keeps_the_original_outside_its_mask_and_differs_from_the_other_methods(backend):
    redrawn = {method: render(backend, outpaint_method=method, denoise=0.8)
               for method in ("gradient", "poor_man", "mk2")}
    mask = np.asarray(outpaint.canvas(picture(64, 64), {**cell().params, "outpaint_method": "mk2"}).mask)
    kept = mask == 0
    # The mask reaches a band of the old picture: the growth (mask_blur) and the blur's reach (three times it).
    assert kept[:, 48:80].all() and not kept[:, 32:36].any()
    assert np.array_equal(redrawn["mk2"][kept], np.pad(pixels(picture(64, 64)), ((0, 0), (32, 32), (0, 0)))[kept])
    for other in ("gradient", "poor_man"):
        assert np.abs(redrawn["mk2"][:, NEW_AREA] - redrawn[other][:, NEW_AREA]).mean() > 3, other
    # With no blur the mask is the new area alone, and the whole original stays exact.
    assert np.array_equal(render(backend, outpaint_method="mk2", mask_blur=0, steps=2)[ORIGINAL],
                          pixels(picture(64, 64)))


def test_mk2_ignores_the_fill_so_such_cells_share_one_render(backend, monkeypatch):
    from gridgen.backends.diffusers_backend import DiffusersBackend

    denoised = []
    original = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: denoised.append(len(batch)) or
                        original(self, batch))
    cells = [cell(key=f, outpaint_method="mk2", outpaint_fill=f, steps=2) for f in ("opencv-telea", "edge")]
    first, second = backend.render(cells)
    assert denoised == [1] and np.array_equal(pixels(first.image), pixels(second.image))


# latent_noise


@pytest.mark.parametrize("method", ["poor_man", "gradient"])
def test_latent_noise_starts_the_new_area_from_noise_not_from_the_fill(backend, method):
    # Both fills stretch the edge in pixels; at denoise 0 the canvas only goes through the VAE and back.
    fill = render(backend, outpaint_method=method, outpaint_fill="edge", denoise=0.0)
    distance = {name: np.abs(render(backend, outpaint_method=method, outpaint_fill=name, denoise=0.2)
                             - fill)[:, NEW_AREA].mean() for name in ("edge", "latent_noise")}
    assert distance["latent_noise"] > 4 * distance["edge"], distance  # at low denoise the start shows through


def test_cells_with_latent_noise_render_in_one_batch_as_alone(folder, monkeypatch):
    cells = [cell(key="a", outpaint_fill="latent_noise", sampler="Euler a", steps=4, denoise=0.7),
             cell(key="b", outpaint_fill="edge", init_image="other.png", sampler="Euler a", steps=4, denoise=0.7),
             cell(key="c", outpaint_fill="latent_noise", seed=5, sampler="Euler a", steps=4, denoise=0.7)]
    assert_one_batch_renders_as_alone(folder, cells, monkeypatch)


# lama:<file>


def test_a_lama_fill_is_the_models_fill_of_the_new_area(backend, folder):
    from gridgen.backends.sd.images import inpainters

    params = {**cell().params, "outpaint_fill": "lama:lama.pth"}
    model = inpainters.load_lama(folder / "lama.pth")
    lama = outpaint.lama_fill(params, lambda name: folder / name, torch.device("cpu"))
    built = outpaint.canvas(picture(64, 64), params, lama)
    stretched = Image.fromarray(np.pad(np.asarray(picture(64, 64)), ((0, 0), (32, 32), (0, 0)), mode="edge"))
    expected = pixels(inpainters.lama(model, stretched, built.new_area, torch.device("cpu")))
    assert np.array_equal(pixels(built.image)[:, NEW_AREA], expected[:, NEW_AREA])
    assert np.array_equal(pixels(built.image)[ORIGINAL], pixels(picture(64, 64)))
    image = render(backend, outpaint_fill="lama:lama.pth", steps=2)
    assert np.array_equal(image[ORIGINAL], pixels(picture(64, 64)))


@pytest.mark.parametrize(("fill", "words"), [("lama:nowhere.pth", ["nowhere.pth", "no such file"]),
                                             ("lama:compact.pth", ["not an inpainting model"])])
def test_a_bad_lama_fill_is_named(backend, fill, words):
    problems = [p for p in backend.validate({**cell().params, "outpaint_fill": fill}) if p.param == "outpaint_fill"]
    assert problems
    for word in words:
        assert word in problems[0].message


def test_the_lama_file_is_located_where_it_is_loaded_from(backend, folder):
    assert backend.locate("outpaint_fill", "lama:lama.pth") == (folder / "lama.pth").resolve()
    assert backend.locate("outpaint_fill", "edge") is None
    assert list(boundary.hidden_paths("outpaint_fill", "LaMa: lama.pth")) == [("outpaint_fill", "path",
                                                                                "lama:lama.pth")]
    assert list(boundary.hidden_paths("outpaint_fill", "latent_noise")) == []


# The change map as a file


def test_a_cell_under_a_change_map_saves_the_map_it_used(folder, tmp_path, monkeypatch):
    from gridgen.backends.sd.denoise import change_map

    spec = write_spec(folder, """
        grid:
          title: change maps
          params: {model: gridgen-tiny, steps: 2, sampler: Euler, init_image: init.png, denoise: 1, mask_blur: 6}
        axes:
          way:
            values:
              map: {params: {change_map: ramp.png}}
              soft: {params: {mask: mask.png, soft_mask: true}}
              gradient: {params: {outpaint: left 16, outpaint_feather: 8}}
              hard: {params: {mask: mask.png}}
        """, name="maps.yaml")
    used = []
    original = change_map.denoise
    monkeypatch.setattr(change_map, "denoise", lambda parts, pixels, change, *rest: used.append(change.clone())
                        or original(parts, pixels, change, *rest))
    options = RunOptions(out=tmp_path / "out", batch_size=1)
    execute(prepare(spec, options), options, show_progress=False)
    journal = {entry["coords"][0]: entry for entry in map(json.loads, (tmp_path / "out" / "journal.jsonl")
                                                          .read_text().splitlines())}
    assert "files" not in journal["hard"]  # a hard mask is no change map
    assert len(used) == 3
    for name, change in zip(("map", "soft", "gradient"), used, strict=True):
        entry = journal[name]
        assert entry["files"]["change_map"] == entry["file"].rsplit(".", 1)[0] + ".change_map.png"
        saved = Image.open(tmp_path / "out" / entry["files"]["change_map"])
        assert saved.mode == "L" and saved.size == Image.open(tmp_path / "out" / entry["file"]).size
        assert np.abs(np.asarray(saved) / 255 - change[0, 0].numpy()).max() <= 1 / 255, name
