"""A second backend proves the seam: `swatch`, from its own package in tests/plugin_backend/ (installed by
`make install`), found through the `gridgen.backends` entry point and written against gridgen.backends.base
alone. `gridgen run` renders it, validation locates its problems, the executor halves its batches when it
runs out of memory, the explorer shows its images with its metadata, and the viewer asks it where its files
are. Its run on Ray is in test_ray_executor.py, which owns the session's Ray instance.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import gridgen_swatch
import numpy as np
import pytest
from PIL import Image

from gridgen.backends import BackendContext, available_backends, load_backend
from gridgen.cli import main
from gridgen.metadata import read_metadata
from gridgen.viewer.specs import SubmissionError, check
from tests.spec_helpers import write_spec

RGB = {"#ff0000": (255, 0, 0), "#00ff00": (0, 255, 0), "#0000ff": (0, 0, 255)}


def _data_js(out: Path) -> dict:
    match = re.match(r"\Awindow\.GRIDGEN = (.*);\n\Z", (out / "data.js").read_text(encoding="utf-8"), re.DOTALL)
    assert match, "data.js must be exactly `window.GRIDGEN = <json>;`"
    return json.loads(match.group(1))


def _palette(folder: Path, name: str = "rgb.txt", text: str = "#ff0000\n#00ff00\n#0000ff\n") -> Path:
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_found_by_its_entry_point_and_written_against_the_interface_alone():
    assert "swatch" in available_backends(), "tests/plugin_backend is not installed: run `make install`"
    backend = load_backend("swatch", BackendContext(spec_dir=Path.cwd()))
    assert isinstance(backend, gridgen_swatch.SwatchBackend) and backend.name == "swatch"
    tree = ast.parse(Path(gridgen_swatch.__file__).read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in modules if name.split(".")[0] == "gridgen"} == {"gridgen.backends.base"}
    assert "torch" not in modules
    imported = subprocess.run([sys.executable, "-c", "import sys, gridgen_swatch; print(sorted(sys.modules))"],
                              capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in imported  # nothing the interface pulls in needs torch


def test_gridgen_run_renders_it_into_the_explorer_with_its_metadata(tmp_path, capsys):
    _palette(tmp_path)
    spec = write_spec(tmp_path, """
        grid:
          title: swatches
          backend: swatch
          format: png
          params: {palette: rgb.txt}
        axes:
          pattern: stripes, checks
          seed: 0, 1, 2
        """)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rendered 6, skipped 0, already done 0, failed 0" in printed
    assert "swatch: drew batches of 3, 3" in printed  # one batch per batch key (the pattern)
    data = _data_js(out)
    assert len(data["cells"]) == 6
    firsts = set()
    for key, cell in data["cells"].items():
        pattern, seed = key.split("/")
        # No width or height in the spec: the size the backend chose reaches the A1111 text through its metadata.
        assert f"Seed: {seed}, Size: 64x48" in cell["parameters"], cell["parameters"]
        embedded = read_metadata(out / cell["image"])
        assert embedded["parameters"] == cell["parameters"]
        metadata = embedded["gridgen"]["metadata"]
        assert metadata["palette"] == "rgb.txt" and metadata["width"] == 64
        pixels = np.asarray(Image.open(out / cell["image"]))
        assert pixels.shape == (48, 64, 3)
        assert tuple(pixels[0, 0]) == RGB[metadata["first_colour"]]
        assert {tuple(p) for p in pixels.reshape(-1, 3)} == set(RGB.values())  # the palette, nothing else
        if pattern == "checks":
            assert tuple(pixels[0, 0]) != tuple(pixels[8, 0])
        else:
            assert (pixels == pixels[0]).all()  # stripes: every row alike
        firsts.add((pattern, metadata["first_colour"]))
    assert len(firsts) == 6  # the seed picks the first colour: three seeds, three colours, per pattern


def test_validation_problems_are_located_at_the_value_that_set_them(tmp_path, capsys):
    _palette(tmp_path)
    _palette(tmp_path, "bad.txt", "#ff0000\nnot a colour\n")
    spec = write_spec(tmp_path, """
        grid:
          backend: swatch
          params: {width: 8, height: 8}
        axes:
          palette: rgb.txt, missing.txt, bad.txt
          pattern:
            values:
              flat: pattern=stripes
              chequered: pattern=checks
        """)
    assert main(["validate", str(spec)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{spec}:5:") and "palette 'missing.txt' not found" in line for line in errors), errors
    assert any(line.startswith(f"{spec}:5:") and "line 2 is not a #rrggbb colour" in line for line in errors), errors
    assert any(line.startswith(f"{spec}:9:") and "checks need at least 16x16 pixels, got 8x8" in line
               for line in errors), errors
    assert not any(line.startswith(f"{spec}:8:") for line in errors), errors  # stripes are fine at 8x8


def test_out_of_memory_halves_its_batches_and_renders_each_cell_once(tmp_path, capsys):
    spec = write_spec(tmp_path, """
        grid:
          backend: swatch
          params: {swatch_memory: 2}
        axes:
          seed: 1, 2, 3, 4, 5, 6, 7, 8
        """)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--batch-size", "8"]) == 0
    printed = capsys.readouterr()
    assert "out of device memory on a batch of 8; retrying in batches of 4" in printed.err
    assert "out of device memory on a batch of 4; retrying in batches of 2" in printed.err
    assert "rendered 8," in printed.out and "swatch: drew batches of 2, 2, 2, 2" in printed.out
    keys = [json.loads(line)["key"] for line in (out / "journal.jsonl").read_text().splitlines()]
    assert sorted(keys) == [str(seed) for seed in range(1, 9)]


def test_the_viewer_asks_it_where_its_files_are(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    _palette(root)
    _palette(outside)
    text = "grid:\n  backend: swatch\n  params: {palette: %s}\naxes:\n  seed: 1, 2\n"
    checked = check(text % "rgb.txt", "p.yaml", "inside", root, None)
    checked.prepared.plan.backend.close()
    for palette, expected in ((outside / "rgb.txt", "outside the root"), ("../elsewhere/rgb.txt", "outside the root"),
                              ("nowhere.txt", "not found under the root")):
        with pytest.raises(SubmissionError) as refused:
            check(text % palette, "p.yaml", "refused", root, None)
        assert any(expected in problem and problem.startswith("p.yaml:3:") for problem in refused.value.problems), \
            refused.value.problems
