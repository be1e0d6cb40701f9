"""Image metrics and axis influence (gridgen/metrics.py), and their place in a run's page data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from gridgen.metrics import Influence, delta_e, image_metrics, signature, ssim


def solid(rgb, size=64) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def pattern(seed: int, size=64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_metrics_of_known_images():
    black, white, grey = image_metrics(solid((0, 0, 0))), image_metrics(solid((255, 255, 255))), image_metrics(
        solid((128, 128, 128)))
    assert black["luminance"] == 0 and black["shadows"] == 100 and black["highlights"] == 0
    assert white["luminance"] == pytest.approx(100, abs=0.1) and white["highlights"] == 100 and white["shadows"] == 0
    assert 50 < grey["luminance"] < 56 and grey["shadows"] == grey["highlights"] == 0
    assert grey["colourfulness"] == 0 and grey["sharpness"] == 0
    half = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(half).rectangle([0, 0, 63, 31], fill=(255, 255, 255))
    assert image_metrics(half)["shadows"] == pytest.approx(50)
    assert image_metrics(half)["highlights"] == pytest.approx(50)
    assert image_metrics(solid((220, 30, 30)))["colourfulness"] > 50
    sharp = pattern(1)
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))
    assert image_metrics(sharp)["sharpness"] > 10 * image_metrics(blurred)["sharpness"]


def test_distances_are_zero_for_the_same_image_and_grow_with_change():
    a = signature(pattern(1))
    assert delta_e(a, a) == 0 and ssim(a, a) == pytest.approx(1)
    red, dark_red, blue = signature(solid((200, 0, 0))), signature(solid((190, 0, 0))), signature(solid((0, 0, 200)))
    assert 0 < delta_e(red, dark_red) < delta_e(red, blue)
    noise = signature(pattern(2))
    assert ssim(a, noise) < 0.5


def test_an_axis_that_changes_nothing_ranks_last_and_one_that_changes_everything_first():
    axes = [("noop", ["a", "b", "c"]), ("hue", ["r", "g", "b"]), ("shade", ["light", "dark"])]
    colours = {"r": (220, 40, 40), "g": (40, 200, 60), "b": (40, 60, 220)}
    influence = Influence(axes)
    for noop in ("a", "b", "c"):
        for hue in colours:
            for shade, factor in (("light", 1.0), ("dark", 0.9)):
                rgb = tuple(round(c * factor) for c in colours[hue])
                influence.add(f"{noop}/{hue}/{shade}", solid(rgb))
    summary = {axis["axis"]: axis for axis in influence.summary()}
    assert summary["noop"]["distance"] == 0 and summary["noop"]["ssim"] == pytest.approx(1)
    assert summary["hue"]["distance"] > 5 * summary["shade"]["distance"] > 0
    ranked = sorted(summary, key=lambda a: summary[a]["distance"], reverse=True)
    assert ranked == ["hue", "shade", "noop"]
    # every pair differing in one axis alone: 3 values -> 3 pairs per line, 6 lines
    assert summary["noop"]["pairs"] == 18 and summary["hue"]["pairs"] == 18 and summary["shade"]["pairs"] == 9
    assert summary["noop"]["duplicates"] == {"b": "a", "c": "b"}
    assert summary["hue"]["duplicates"] == {}
    assert set(summary["hue"]["values"]) == {"r", "g", "b"}
    assert all(v > 0 for v in summary["hue"]["values"].values())


def test_values_far_from_the_rest_have_the_largest_distance_and_replacing_a_cell_updates_the_sums():
    influence = Influence([("strength", ["s0", "s1", "s2", "s3"])])
    for i, value in enumerate(["s0", "s1", "s2"]):
        influence.add(value, solid((100 + i, 100, 100)))
    influence.add("s3", solid((250, 250, 20)))
    axis = influence.summary()[0]
    assert max(axis["values"], key=axis["values"].get) == "s3"
    assert axis["duplicates"] == {"s1": "s0", "s2": "s1"}
    influence.add("s3", solid((103, 100, 100)))  # re-rendered: its old pairs are taken back
    again = influence.summary()[0]
    assert again["pairs"] == 6 and again["distance"] < 1
    assert again["duplicates"] == {"s1": "s0", "s2": "s1", "s3": "s2"}
    assert influence.metrics["s3"] == image_metrics(solid((103, 100, 100)))


def test_unknown_keys_are_ignored_and_catch_up_reads_thumbnails(tmp_path):
    influence = Influence([("a", ["x", "y"])])
    influence.add("x/extra", solid((0, 0, 0)))
    influence.add("z", solid((0, 0, 0)))
    assert influence.metrics == {}
    solid((10, 20, 30)).save(tmp_path / "x.webp")
    influence.catch_up(tmp_path, {"x": "x.webp", "y": "missing.webp"})
    assert list(influence.metrics) == ["x"] and influence.summary()[0]["pairs"] == 0
    assert influence.summary()[0]["distance"] is None


SPEC = """
grid:
  title: Influence grid
  format: png
  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, seed: 5}
axes:
  prompt:
    values:
      red: {params: {prompt: a red circle on a white background}}
      blue: {params: {prompt: a blue square on a black background}}
  again:
    title: Same seed twice
    values:
      one: {params: {seed: 5}}
      two: {params: {seed: 5}}
  cfg: 3, 7
"""


@pytest.fixture(scope="module")
def run_grid(tmp_path_factory):
    from gridgen.cli import main
    from tests.spec_helpers import write_spec

    folder = tmp_path_factory.mktemp("influence")
    out = folder / "out"
    assert main(["run", str(write_spec(folder, SPEC)), "--out", str(out), "--quiet"]) == 0
    return folder, out


def test_a_run_publishes_metrics_and_ranks_the_axes(run_grid):
    from gridgen.explorer import read_grid_json

    _, out = run_grid
    data = read_grid_json(out)
    influence = {axis["axis"]: axis for axis in data["influence"]}
    assert [axis["axis"] for axis in data["influence"]] == ["prompt", "again", "cfg"]
    assert influence["again"]["distance"] == 0 and influence["again"]["duplicates"] == {"two": "one"}
    assert influence["prompt"]["distance"] > influence["cfg"]["distance"] > 0
    assert influence["prompt"]["pairs"] == 4 and influence["cfg"]["pairs"] == 4
    for cell in data["cells"].values():
        assert set(cell["metrics"]) == {"luminance", "shadows", "highlights", "colourfulness", "sharpness"}
    assert data["cells"]["red/one/3"]["metrics"] == data["cells"]["red/two/3"]["metrics"]


def test_a_resumed_run_reads_the_earlier_cells_from_their_thumbnails(run_grid):
    from gridgen.cli import main
    from gridgen.explorer import read_grid_json

    folder, out = run_grid
    before = read_grid_json(out)
    (out / "grid.json").unlink()
    assert main(["run", str(folder / "grid.yaml"), "--out", str(out), "--quiet"]) == 0
    after = read_grid_json(out)
    assert after["influence"] == before["influence"]
    assert {k: c["metrics"] for k, c in after["cells"].items()} == {k: c["metrics"] for k, c in before["cells"].items()}


def test_export_prints_the_influence_table_and_the_cell_metrics_as_csv(run_grid, capsys):
    import csv
    import io
    import json

    from gridgen.cli import main

    _, out = run_grid
    assert main(["export", str(out), "--metrics"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    axis_rows = [row for row in rows if row["rank"]]
    assert [row["axis"] for row in axis_rows] == ["prompt", "cfg", "again"]  # most influential first
    assert float(axis_rows[0]["delta_e"]) > float(axis_rows[1]["delta_e"]) > float(axis_rows[2]["delta_e"]) == 0
    assert int(axis_rows[0]["pairs"]) == 4
    again = [row for row in rows if row["axis"] == "again" and row["value"]]
    assert [(row["value"], row["duplicate_of"]) for row in again] == [("one", ""), ("two", "one")]
    assert main(["export", str(out), "--metrics", "cells"]) == 0
    cells = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    data = json.loads((out / "grid.json").read_text())
    assert len(cells) == 8 and cells[0]["key"] == "blue/one/3" and cells[0]["prompt"] == "blue"
    assert float(cells[0]["sharpness"]) == data["cells"]["blue/one/3"]["metrics"]["sharpness"]


def test_export_metrics_of_a_grid_without_them_says_what_to_do(tmp_path, capsys):
    from gridgen.cli import main
    from gridgen.explorer import write_data

    write_data(tmp_path, {"axes": [], "cells": {}})
    assert main(["export", str(tmp_path), "--metrics"]) == 2
    assert "run the grid again" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "needs --x" in capsys.readouterr().err


def test_numeric_metadata_fields_become_scores():
    from gridgen.metrics import numeric_fields

    assert numeric_fields({"aesthetic": 6.5, "steps_done": 20, "model": "x", "nsfw": False, "bad": float("nan"),
                           "loras": [1, 2]}) == {"aesthetic": 6.5, "steps_done": 20}
    assert numeric_fields({"width": 64, "aesthetic": 5}, params={"width": 64}) == {"aesthetic": 5}
    assert numeric_fields(None) == {}
