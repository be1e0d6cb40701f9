"""Every example grid the project ships in grids/ validates under `--strict`: no errors and no warnings, on the
embedded models alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridgen.cli import main

GRIDS = sorted((Path(__file__).resolve().parents[1] / "grids").glob("*.yaml"))


def test_the_examples_are_found():
    assert len(GRIDS) >= 8 and any(path.name == "demo.yaml" for path in GRIDS)


@pytest.mark.parametrize("grid", GRIDS, ids=[path.stem for path in GRIDS])
def test_example_grid_validates_strictly(grid, capsys):
    code = main(["validate", "--strict", str(grid)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == "", captured.err  # not even a warning
    assert captured.out.startswith(f"{grid}: ok, ")
