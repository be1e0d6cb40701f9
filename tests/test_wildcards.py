"""Wildcards: `__name__` picks a line of wildcards/name.txt per cell seed, reproducibly, through `gridgen run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridgen.backends.sd.text import wildcards
from gridgen.cli import main
from gridgen.metadata import read_metadata
from tests.spec_helpers import write_spec

GRID = """
grid:
  format: png
  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, sampler: Euler, negative_prompt: __mood__}
axes:
  prompt: a __color__ square || __color__ and __color__
  seed: 1, 2, 3, 4, 5, 6
"""


def write_wildcards(folder: Path) -> None:
    (folder / "wildcards" / "nested").mkdir(parents=True, exist_ok=True)
    (folder / "wildcards" / "color.txt").write_text("# colours\nred\n\nblue\ngreen\nyellow\n__nested/shade__ gray\n")
    (folder / "wildcards" / "nested" / "shade.txt").write_text("light\ndark\n")
    (folder / "wildcards" / "mood.txt").write_text("blurry\ndark\n")


def test_expand_is_seeded_per_cell_and_records_picks(tmp_path):
    write_wildcards(tmp_path)
    where = wildcards.folders(tmp_path, None)
    first = wildcards.expand("__color__ and __color__", 7, where)
    assert first == wildcards.expand("__color__ and __color__", 7, where)
    text, picked = first
    assert text == " and ".join(wildcards.expand(line, 7, where)[0] for line in picked["color"])
    options = {"red", "blue", "green", "yellow", "light gray", "dark gray"}
    seen = {wildcards.expand("__color__", seed, where)[0] for seed in range(60)}
    assert seen == options  # every line is reachable; comments and blank lines are not lines


def test_models_dir_wildcards_and_missing_files(tmp_path):
    write_wildcards(tmp_path / "models")
    where = wildcards.folders(tmp_path / "spec", tmp_path / "models")
    assert wildcards.problems("a __mood__ __nested/shade__", where) == []
    (problem,) = wildcards.problems("a __nope__", where)
    assert "__nope__" in problem and str(tmp_path / "spec" / "wildcards" / "nope.txt") in problem
    assert str(tmp_path / "models" / "wildcards" / "nope.txt") in problem
    (tmp_path / "models" / "wildcards" / "empty.txt").write_text("# nothing\n\n")
    (problem,) = wildcards.problems("__empty__", where)
    assert "no choices" in problem
    (tmp_path / "models" / "wildcards" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (problem,) = wildcards.problems("__latin1__", where)
    assert "cannot read wildcard file" in problem and "UTF-8" in problem
    (tmp_path / "secret.txt").write_text("password\n")
    (problem,) = wildcards.problems("__../../secret__", where)
    assert "inside a wildcards folder" in problem
    (tmp_path / "models" / "wildcards" / "loop.txt").write_text("__loop__ again\n")
    with pytest.raises(wildcards.WildcardError, match="nest more than"):
        wildcards.expand("__loop__", 1, where)


def journal(out: Path) -> dict[str, dict]:
    entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    return {entry["key"]: entry for entry in entries}


def test_run_is_reproducible_and_records_each_pick(tmp_path, capsys):
    write_wildcards(tmp_path)
    spec = write_spec(tmp_path, GRID)
    for out in ("one", "two"):
        assert main(["run", str(spec), "--out", str(tmp_path / out), "--quiet", "--batch-size", "4"]) == 0
    first, second = journal(tmp_path / "one"), journal(tmp_path / "two")
    assert {k: e["hash"] for k, e in first.items()} == {k: e["hash"] for k, e in second.items()}
    prompts = {entry["metadata"]["prompt"] for entry in first.values()}
    assert len(prompts) > 3 and not any("__" in p for p in prompts)  # seeds pick different lines
    entry = first["a_color_square/1"]
    picks = entry["metadata"]["wildcards"]
    assert entry["metadata"]["prompt"].startswith(f"a {picks['prompt']['color'][0].split()[0]}")
    assert picks["negative_prompt"]["mood"][0] == entry["metadata"]["negative_prompt"]
    parameters = read_metadata(tmp_path / "one" / entry["file"])["parameters"]
    assert parameters.startswith(entry["metadata"]["prompt"] + "\nNegative prompt: ")


def test_missing_wildcard_is_a_located_validation_error(tmp_path, capsys):
    spec = write_spec(tmp_path, GRID)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:3:" in err and "wildcard __mood__ has no file" in err
    assert f"{spec}:5:" in err and "wildcard __color__ has no file" in err
    assert str(tmp_path / "wildcards" / "color.txt") in err
