"""The SAM prompt axis: prompt parsing, SAM's coordinate frame, mask choice, dilation, the remove/fill/replace
inpainters (Telea, LaMa through spandrel, an SD inpainting model), mask and overlay files, the stage cache, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.images import masks as mask_ops
from gridgen.backends.sd.stages import segment
from gridgen.backends.sd.stages.segment_params import parse_sam_prompt
from gridgen.errors import SpecError
from gridgen.runner import RunOptions, execute, prepare
from gridgen.tiny import TINY_VARIANT_DIRS
from tests.spec_helpers import write_spec
from tests.test_image_modes import build_inpaint_folder, picture, pixels

# Prompts


@pytest.mark.parametrize(("raw", "text"), [
    ("point 320 240", "point 320 240"),
    ("Point 10, 20; point 30 40 0", "point 10 20; point 30 40 0"),
    ("box 10 10 200 180", "box 10 10 200 180"),
    ({"points": [[320, 240]], "labels": [1]}, "point 320 240"),
    ({"points": [[1, 2], [3.5, 4]], "labels": [1, 0], "box": [0, 0, 9, 9]}, "point 1 2; point 3.5 4 0; box 0 0 9 9"),
    ({"box": [1, 2, 3, 4]}, "box 1 2 3 4"),
    ([[5, 6], [7, 8]], "point 5 6; point 7 8"),
])
def test_sam_prompts_parse_to_one_spelling(raw, text):
    assert parse_sam_prompt(raw).text == text
    assert parse_sam_prompt(text) == parse_sam_prompt(raw)


@pytest.mark.parametrize(("raw", "words"), [
    ("box 200 10 10 180", "x2 > x1"),
    ({"box": [0, 50, 10, 40]}, "y2 > y1"),
    ("point 1", "2 numbers"),
    ("circle 1 2 3", "point X Y"),
    ({"points": [[1, 2]], "labels": [1, 1]}, "1 point(s) but 2 label(s)"),
    ("point 1 2 5", "labels are 1"),
    ("", "at least one point or a box"),
])
def test_bad_sam_prompts_say_what_to_write(raw, words):
    with pytest.raises(ValueError, match="sam_prompt") as caught:
        parse_sam_prompt(raw)
    assert words in str(caught.value)


def test_a_prompt_outside_the_image_is_named():
    assert "outside the 64x48" in parse_sam_prompt("point 64 10").outside(64, 48)
    assert "reaches outside" in parse_sam_prompt("box 0 0 65 10").outside(64, 48)
    assert parse_sam_prompt("point 63 47; box 0 0 64 48").outside(64, 48) is None


# Fixtures


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A spec folder: an input image, a random tiny SAM, a random 9-channel inpainter, LaMa and bad model files."""
    from gridgen.backends.sd.stages import upscale_models
    from gridgen.tiny.sam import build_processor, build_sam

    root = tmp_path_factory.mktemp("sam")
    picture(64, 64).save(root / "input.png")
    picture(128, 96).save(root / "wide.png")
    torch.manual_seed(0)
    build_sam().save_pretrained(root / "tiny-sam")
    build_processor().save_pretrained(root / "tiny-sam")
    build_inpaint_folder(root / "tiny-inpaint")
    upscale_models._loader()  # spandrel imports only through gridgen's loader
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.LaMa import LaMa

    lama = LaMa(in_nc=4)  # the image and its mask; LaMa has one fixed size, and fp16 halves the file
    torch.save({name: value.half() for name, value in lama.state_dict().items()}, root / "lama.pth")
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), root / "compact.pth")
    torch.save({"weight": torch.zeros(3, 3)}, root / "unknown.pth")
    return root


def cell(key: str = "0", **params) -> Cell:
    base = {"prompt": "a red square", "seed": 1, "steps": 3, "sampler": "Euler", "init_image": "input.png",
            "sam_model": "tiny-sam", "sam_prompt": "point 32 32", "inpainter": "opencv-telea", "inpaint_mode": "remove",
            "mask_blur": 0}
    return Cell(index=0, key=key, coords=(key,), params={**base, **params}, image_path=f"images/{key}.png",
                thumb_path=f"thumbs/{key}.webp")


def disc(size: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    return (x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius ** 2


@pytest.fixture()
def known_sam(monkeypatch):
    """SAM replaced by masks known in advance: discs of radius 6, 10 and 14 around the first point."""
    calls = []

    def fake(sam, image, prompt):
        calls.append(prompt.text)
        masks = np.stack([disc(image.size, prompt.points[0], r) for r in (6, 10, 14)])
        return masks, np.array([0.2, 0.9, 0.5], dtype=np.float32)

    monkeypatch.setattr(segment, "segment", fake)
    return calls


# SAM's frame


class _PointEcho(torch.nn.Module):
    """Stands in for SamModel: each of its three masks is a 3x3 blob where the processor put the first point."""

    def forward(self, pixel_values, input_points=None, input_labels=None, input_boxes=None, multimask_output=True):
        from types import SimpleNamespace

        side = pixel_values.shape[-1]  # the padded square the model sees; masks come back at this size here
        x, y = (int(v) for v in input_points[0, 0, 0])
        masks = torch.full((1, 1, 3, side, side), -10.0)
        masks[..., max(0, y - 1):y + 2, max(0, x - 1):x + 2] = 10.0
        return SimpleNamespace(pred_masks=masks, iou_scores=torch.tensor([[[0.1, 0.2, 0.3]]]))


def test_a_point_lands_on_its_pixel_through_sams_resize_and_padding(folder):
    from transformers import SamProcessor

    processor = SamProcessor.from_pretrained(folder / "tiny-sam")
    image = picture(128, 96)  # resized to 64x48 and padded to 64x64 on the way in
    inputs = segment.model_inputs(processor, image, parse_sam_prompt("point 100 40; box 20 10 120 90"))
    assert inputs["input_points"][0, 0].tolist() == [[50, 20]]
    assert inputs["input_boxes"][0, 0].tolist() == [10, 5, 60, 45]
    sam = segment.Sam(folder, _PointEcho(), processor, torch.device("cpu"))
    masks, scores = segment.segment(sam, image, parse_sam_prompt("point 100 40"))
    assert masks.shape == (3, 96, 128) and scores.tolist() == pytest.approx([0.1, 0.2, 0.3])
    ys, xs = np.nonzero(masks[0])
    assert masks[0][40, 100]
    assert abs(xs.mean() - 100.5) <= 1.5 and abs(ys.mean() - 40.5) <= 1.5, (xs.mean(), ys.mean())


def test_sam_mask_picks_the_best_or_the_numbered_mask():
    masks = np.stack([disc((20, 20), (10, 10), r) for r in (2, 4, 6)])
    scores = np.array([0.3, 0.1, 0.8])
    assert np.array_equal(np.asarray(segment.pick(masks, scores, "best")) > 0, masks[2])
    assert np.array_equal(np.asarray(segment.pick(masks, scores, "1")) > 0, masks[1])


def test_the_random_sam_runs_and_cells_write_the_chosen_mask(backend, folder):
    from transformers import SamModel, SamProcessor

    model, processor = SamModel.from_pretrained(folder / "tiny-sam"), SamProcessor.from_pretrained(folder / "tiny-sam")
    expected, scores = segment.segment(segment.Sam(folder, model, processor, torch.device("cpu")),
                                       picture(64, 64), parse_sam_prompt("point 20 30"))
    for choice, index in (("0", 0), ("2", 2), ("best", int(np.argmax(scores)))):
        (result,) = backend.render([cell(sam_prompt="point 20 30", sam_mask=choice, dilate=0)])
        assert np.array_equal(np.asarray(result.files["mask"]) > 0, expected[index]), choice
        facts = result.metadata["sam"]  # recorded in the journal and the image's own metadata
        assert facts["mask_index"] == index and facts["predicted_iou"] == pytest.approx(scores[index], abs=1e-4)


# Dilation


def test_dilation_grows_the_mask_by_the_radius():
    mask = Image.new("L", (41, 41), 0)
    mask.putpixel((20, 20), 255)
    grown = np.asarray(mask_ops.dilate(mask, 7)) > 0
    assert grown[20, 27] and grown[20, 13] and grown[27, 20] and not grown[20, 28] and not grown[28, 20]
    assert grown[25, 25] and not grown[26, 26]  # a disk: (5, 5) is within 7, (6, 6) is not
    assert abs(grown.sum() - np.pi * 7 ** 2) < 0.15 * np.pi * 7 ** 2


# Inpaint modes


@pytest.mark.parametrize("inpainter", ["opencv-telea", "lama:lama.pth", "tiny-inpaint", "gridgen-tiny"])
@pytest.mark.parametrize("mode", ["remove", "fill"])
def test_remove_and_fill_touch_only_the_dilated_mask(backend, known_sam, mode, inpainter):
    (result,) = backend.render([cell(inpaint_mode=mode, inpainter=inpainter, sam_mask="0", dilate=3,
                                     denoise=1.0)])
    edited = np.asarray(result.files["mask"]) > 0
    assert (edited >= disc((64, 64), (32, 32), 8.5)).all() and (edited <= disc((64, 64), (32, 32), 9.5)).all()
    source, out = pixels(picture(64, 64)), pixels(result.image)
    assert np.array_equal(out[~edited], source[~edited])
    assert np.abs(out - source)[edited].mean() > 1


@pytest.mark.parametrize("inpainter", ["opencv-telea", "tiny-inpaint"])
def test_replace_keeps_the_object_pixels_exactly_and_redraws_the_rest(backend, known_sam, inpainter):
    (result,) = backend.render([cell(inpaint_mode="replace", inpainter=inpainter, sam_mask="best", mask_blur=4,
                                     denoise=1.0)])
    kept = disc((64, 64), (32, 32), 10)  # "best" is mask 1 (score 0.9); replace dilates by 0
    source, out = pixels(picture(64, 64)), pixels(result.image)
    assert np.array_equal(out[kept], source[kept])
    assert np.abs(out - source)[~kept].mean() > 5


def test_default_dilation_follows_the_mode(backend, known_sam):
    sizes = {}
    for mode in ("remove", "fill", "replace"):
        (result,) = backend.render([cell(inpaint_mode=mode, sam_mask="0")])
        sizes[mode] = int((np.asarray(result.files["mask"]) > 0).sum())
    assert sizes["replace"] == int(disc((64, 64), (32, 32), 6).sum())
    assert sizes["replace"] < sizes["remove"] < sizes["fill"] == 64 * 64  # 50 px covers this small image


# Errors, before rendering


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"sam_prompt": "point 70 10"}, "sam_prompt", ["point (70, 10) is outside the 64x64 input image"]),
    ({"sam_prompt": "point 70 10", "init_image": None, "width": 96, "height": 96}, "sam_prompt", []),
    ({"inpainter": "lama:unknown.pth"}, "inpainter", ["unknown.pth", "spandrel cannot identify"]),
    ({"inpainter": "lama:compact.pth"}, "inpainter", ["not an inpainting model"]),
    ({"inpainter": "lama:nowhere.pth"}, "inpainter", ["nowhere.pth", "no such file"]),
    ({"sam_model": "no-such-sam"}, "sam_model", ["'no-such-sam' not found"]),
    ({"sam_model": "tiny-inpaint"}, "sam_model", ["no config.json"]),
    ({"sam_model": "tiny-inpaint/unet"}, "sam_model", ["UNet2DConditionModel model, not a Segment Anything"]),
    ({"mask": "input.png"}, "mask", ["give one"]),
])
def test_sam_problems_are_found_before_rendering(backend, params, param, words):
    found = [p.message for p in backend.validate({**cell().params, **params}) if p.param == param]
    if not words:  # the txt2img input is 96x96 here, so the point fits
        assert found == []
        return
    assert found, backend.validate({**cell().params, **params})
    for word in words:
        assert word in found[0]


def test_fill_without_a_prompt_reading_inpainter_is_a_warning(backend):
    (problem,) = backend.validate({**cell().params, "inpaint_mode": "fill", "inpainter": "lama:lama.pth"})
    assert problem.severity == "warning" and "reads no prompt" in problem.message
    assert backend.validate({**cell().params, "inpaint_mode": "remove", "inpainter": "lama:lama.pth"}) == []


def test_a_box_with_x2_left_of_x1_is_a_spec_error(folder, tmp_path):
    spec = write_spec(folder, """
        grid:
          params: {model: gridgen-tiny, init_image: input.png, sam_model: tiny-sam, inpainter: opencv-telea}
        axes:
          sam_prompt: point 10 10 || box 50 10 20 40
        """, name="bad-box.yaml")
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    assert "x2 > x1" in str(caught.value) and "bad-box.yaml:4:" in str(caught.value)


# Grids: the stage cache, mask and overlay files


def test_a_prompt_to_image_to_edit_grid_shares_base_images_and_masks(folder, tmp_path, monkeypatch):
    spec = write_spec(folder, """
        grid:
          params: {model: gridgen-tiny, steps: 2, sampler: Euler, sam_model: tiny-sam, inpainter: opencv-telea,
                   sam_prompt: point 30 30}
        axes:
          seed: 1, 2
          sam_mask: 0, 1
          dilate: 0, 4
          prompt: a red square, a blue circle
        """, name="edit-grid.yaml")
    denoised, segmented, filled = [], [], []
    original_denoise = DiffusersBackend._denoise
    monkeypatch.setattr(DiffusersBackend, "_denoise", lambda self, batch: denoised.append(len(batch)) or
                        original_denoise(self, batch))
    original_segment = segment.segment
    monkeypatch.setattr(segment, "segment", lambda *a: segmented.append(1) or original_segment(*a))
    from gridgen.backends.sd.images import inpainters

    original_telea = inpainters.telea
    monkeypatch.setattr(inpainters, "telea", lambda *a: filled.append(1) or original_telea(*a))
    options = RunOptions(out=tmp_path / "out", batch_size=8)
    execute(prepare(spec, options), options, show_progress=False)
    out = tmp_path / "out"
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 16
    assert sum(denoised) == 4  # one base per seed and prompt; SAM params never split it
    assert len(segmented) == 4  # SAM once per base image, whatever the mask choice and dilation
    assert len(filled) == 16
    for entry in journal:
        assert set(entry["files"]) == {"mask", "overlay"}
        mask = Image.open(out / entry["files"]["mask"])
        overlay = Image.open(out / entry["files"]["overlay"])
        assert entry["files"]["mask"] == entry["file"].rsplit(".", 1)[0] + ".mask.png"
        assert mask.size == overlay.size == (64, 64) and mask.mode == "L"
        assert overlay.getpixel((30, 30)) == mask_ops.POINT_COLORS[1]  # the prompt point is marked
    data = (out / "data.js").read_text()
    assert ".mask.png" in data and ".overlay.png" in data


def test_an_edit_grid_over_telea_caches_across_prompts(folder, tmp_path, monkeypatch, known_sam):
    spec = write_spec(folder, """
        grid:
          params: {model: gridgen-tiny, init_image: input.png, sam_model: tiny-sam, sam_prompt: point 30 30,
                   steps: 2, mask_blur: 0}
        axes:
          inpainter: opencv-telea, tiny-inpaint
          prompt: a red square, a blue circle
        """, name="telea-grid.yaml")
    from gridgen.backends.sd.images import inpainters

    filled = []
    original_telea = inpainters.telea
    monkeypatch.setattr(inpainters, "telea", lambda *a: filled.append(1) or original_telea(*a))
    options = RunOptions(out=tmp_path / "out", batch_size=4)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    images = {e["key"]: pixels(Image.open(tmp_path / "out" / e["file"])) for e in journal}
    assert len(images) == 4 and len(filled) == 1  # Telea reads no prompt: one fill serves both cells
    assert len(known_sam) == 1  # and SAM ran once for the one input image
    keys = sorted(images)
    telea = [k for k in keys if k.startswith("opencv")]
    sd = [k for k in keys if k.startswith("tiny")]
    assert np.array_equal(images[telea[0]], images[telea[1]])
    assert not np.array_equal(images[sd[0]], images[sd[1]])  # the SD inpainter follows the prompt


def test_the_shipped_tiny_sam_finds_a_shape_from_a_point_on_a_resized_image():
    from gridgen.tiny import data as shapes

    sample = shapes.draw("red", "circle", "white", 20, 12, 24)  # 64x64 image, the circle's box is (20, 12)-(44, 36)
    image = Image.fromarray(sample.image).resize((128, 128), Image.Resampling.NEAREST).crop((0, 0, 128, 96))
    truth = np.asarray(Image.fromarray(sample.mask).resize((128, 128), Image.Resampling.NEAREST).crop((0, 0, 128, 96)))
    sam = segment.load_sam(segment.resolve_sam("gridgen-tiny-sam", TINY_VARIANT_DIRS["sam"], None),
                           torch.device("cpu"))
    masks, scores = segment.segment(sam, image, parse_sam_prompt("point 64 48"))  # the circle's center
    best = masks[int(np.argmax(scores))]
    assert (best & truth).sum() / (best | truth).sum() > 0.7


@pytest.mark.parametrize(("library", "param", "extra"), [
    ("axes/inpaint_mode.yaml", "inpaint_mode", "init_image: input.png, sam_model: tiny-sam, sam_prompt: point 5 5, "
                                               "inpainter: opencv-telea"),
    ("axes/inpainting_fill.yaml", "inpainting_fill", "init_image: input.png, mask: input.png"),
])
def test_edit_axis_libraries_teach_every_value_and_validate(folder, tmp_path, library, param, extra):
    spec = write_spec(folder, f"""
        include: {library}
        grid:
          params: {{model: gridgen-tiny, steps: 2, {extra}}}
        """, name=f"{param}-library.yaml")
    prepared = prepare(spec, RunOptions(out=tmp_path / "out"))  # validates every cell: a bad value fails here
    (axis,) = prepared.plan.spec.axes
    assert axis.id == param and len(axis.description) > 200 and len(axis.values) >= 3
    for value in axis.values:
        assert value.title and len(value.description) > 80, value.key
        assert set(value.params) == {param}
