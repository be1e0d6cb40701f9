"""`gridgen export`: a labelled grid image of a real `gridgen run` output (gridgen-tiny, 32 px)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridgen.cli import main
from gridgen.errors import GridError
from gridgen.export import export_grid
from tests.spec_helpers import write_spec

SPEC = """
grid:
  title: Export test
  format: png
  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, seed: 3}
axes:
  prompt:
    title: Prompt
    values:
      red: {title: red circle, params: {prompt: a red circle}}
      blue: {title: blue square, params: {prompt: a blue square}}
  cfg:
    title: CFG scale
    values:
      c1: {title: "1", params: {cfg_scale: 1}}
      c7: {title: "7", params: {cfg_scale: 7}}
      c9: {title: "9", params: {cfg_scale: 9}}
  seed: 5, 6
"""
CELL = 32


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    out = folder / "out"
    assert main(["run", str(write_spec(folder, SPEC)), "--out", str(out), "--quiet"]) == 0
    return out


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def dark(region: np.ndarray) -> int:
    """How many pixels of a region are text-dark (the background is white)."""
    return int((region.max(axis=2) < 110).sum())


def test_export_draws_the_cells_under_their_labels(grid, tmp_path, capsys):
    target = tmp_path / "grid.png"
    assert main(["export", str(grid), "--x", "cfg", "--y", "Prompt", "--fix", "seed=6", "-o", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    image = pixels(target)
    height, width = image.shape[:2]
    label_w, head_h = width - 3 * CELL, height - 2 * CELL
    assert label_w >= 60 and head_h > 20  # a label column on the left, headers on top
    # every cell, in place: columns are cfg values, rows are prompts, the seed is fixed at 6
    for r, prompt in enumerate(["red", "blue"]):
        for c, cfg in enumerate(["c1", "c7", "c9"]):
            cell = image[head_h + r * CELL: head_h + (r + 1) * CELL, label_w + c * CELL: label_w + (c + 1) * CELL]
            assert np.array_equal(cell, pixels(grid / f"images/{prompt}/{cfg}/6.png")), (prompt, cfg)
    # labels are drawn: a value title over each column, a row label left of each row, the axes in the corner
    for c in range(3):
        assert dark(image[:head_h, label_w + c * CELL: label_w + (c + 1) * CELL]) > 5, c
    for r in range(2):
        assert dark(image[head_h + r * CELL: head_h + (r + 1) * CELL, :label_w]) > 20, r
    assert dark(image[:head_h, :label_w]) > 20
    Image.open(target).save("/tmp/export-grid.png")


def test_export_defaults_thumbs_and_one_row(grid, tmp_path):
    [path] = export_grid(grid, x="seed", y=None, output=tmp_path / "row.jpg", thumbs=True)
    image = Image.open(path)
    assert image.format == "JPEG"
    assert image.width - 2 * CELL >= 60  # two seed columns (thumbs of 32 px images are 32 px)
    # the other axes are fixed at their first values: prompt red, cfg 1
    head_h = image.height - CELL
    first = np.asarray(image.convert("RGB"), dtype=np.int16)[head_h:, image.width - 2 * CELL: image.width - CELL]
    assert np.abs(first - pixels(grid / "thumbs/red/c1/5.webp")).mean() < 6  # JPEG is close, not exact


def test_export_splits_large_grids(grid, tmp_path):
    target = tmp_path / "big.png"
    whole = export_grid(grid, x="cfg", y="prompt", output=target)
    assert whole == [target]
    width, height = Image.open(target).size
    paths = export_grid(grid, x="cfg", y="prompt", output=target, max_pixels=width * height // 2)
    assert [p.name for p in paths][:2] == ["big-1.png", "big-2.png"] and len(paths) > 1
    for path in paths:
        part = Image.open(path)
        assert part.width * part.height <= width * height // 2
        assert dark(pixels(path)[: part.height - CELL]) > 20  # every part has its own headers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "cgf"], "unknown axis 'cgf' (did you mean 'cfg'?)"),
        (["--x", "cfg", "--y", "promt"], "did you mean 'prompt'"),
        (["--x", "cfg", "--fix", "seed=7"], "axis 'seed' has no value '7'"),
        (["--x", "cfg", "--fix", "prompt=bleu"], "did you mean 'blue'"),
        (["--x", "cfg", "--fix", "seed"], "--fix expects axis=value"),
        (["--x", "cfg", "--y", "CFG scale"], "both name the axis 'cfg'"),
        (["--x", "cfg", "--fix", "cfg=c1"], "names an axis already on the grid"),
        (["--x", "cfg", "-o", "grid.gif"], "must end in .png, .jpg or .webp"),
    ],
)
def test_export_bad_input_says_what_to_do(grid, tmp_path, capsys, args, message):
    assert main(["export", str(grid), *args] + ([] if "-o" in args else ["-o", str(tmp_path / "g.png")])) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_export_of_a_folder_that_is_not_a_grid(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--x", "cfg"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--x", "cfg"]) == 2
    assert "grid.json not found" in capsys.readouterr().err
    with pytest.raises(GridError):
        export_grid(tmp_path, x="cfg", y=None, output=tmp_path / "g.png")
