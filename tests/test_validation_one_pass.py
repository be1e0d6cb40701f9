"""Validation is one pass: the spec's own problems (ranges, unknown params) and the backend's checks (models,
input files) are reported together, each at its line, in file and line order, by `validate`, `validate --json`
and `run`, which refuses before rendering anything."""

from __future__ import annotations

import json
import re

from spec_helpers import write_spec

from gridgen.cli import main

FIVE_PROBLEMS = """
    grid:
      title: five problems
      params:
        model: no-such-model
        steps: 0
        cfg_scale: 200
        samplr: Euler
        init_image: missing.png
    axes:
      seed: 1, 2
"""
# (line, what the message says) of each problem, in line order; the model's is found last but comes first.
EXPECTED = [(4, "model 'no-such-model' not found"), (5, "steps must be >= 1"), (6, "cfg_scale must be"),
            (7, "unknown parameter 'samplr'"), (8, "init_image 'missing.png': no such file")]


def located_lines(text: str, spec_name: str) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in re.finditer(rf"^{re.escape(spec_name)}:(\d+):\d+: (.*)$", text, re.M)]


def assert_the_five(found: list[tuple[int, str]]) -> None:
    assert len(found) == len(EXPECTED), found
    for (line, message), (want_line, want) in zip(found, EXPECTED, strict=True):
        assert line == want_line and want in message, (line, message)


def test_validate_reports_spec_file_and_model_problems_together(tmp_path, capsys):
    spec = write_spec(tmp_path, FIVE_PROBLEMS)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert_the_five(located_lines(err, str(spec)))
    assert "5 problem(s) found" in err


def test_validate_json_lists_every_problem_with_its_line(tmp_path, capsys):
    spec = write_spec(tmp_path, FIVE_PROBLEMS)
    assert main(["validate", "--json", str(spec)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    assert_the_five([(error["line"], error["message"]) for error in report["errors"]])
    assert {error["file"] for error in report["errors"]} == {str(spec)}


def test_run_refuses_with_every_problem_before_rendering(tmp_path, capsys):
    spec = write_spec(tmp_path, FIVE_PROBLEMS)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
    assert_the_five(located_lines(capsys.readouterr().err, str(spec)))
    assert not out.exists()


def test_problems_come_in_command_line_then_file_then_include_order(tmp_path, capsys):
    """Found in another order (the include first, the backend's last), printed by place."""
    write_spec(tmp_path, """
        axes:
          steps: 3, -1
    """, name="extra.yaml")
    spec = write_spec(tmp_path, """
        include: extra.yaml
        grid:
          params:
            init_image: gone.png
            cfg_scale: 500
        axes:
          sampler: Euler, Nope
          width: 64, 70
    """)
    assert main(["validate", str(spec), "--set", "seed=abc"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.endswith("problem(s) found")]
    assert lines[0].startswith("<command line>: ") and "seed" in lines[0]
    places = [re.match(r"^(.*?):(\d+):\d+: ", line) for line in lines[1:]]
    assert all(places), lines
    own = [int(m[2]) for m in places if m[1] == str(spec)]
    included = [int(m[2]) for m in places if m[1] == str(tmp_path / "extra.yaml")]
    assert own == sorted(own) and len(own) >= 4, lines  # init_image, cfg_scale, the sampler, the width
    assert included == [2], lines
    assert [m[1] for m in places] == [str(spec)] * len(own) + [str(tmp_path / "extra.yaml")], lines


def test_validate_json_shows_a_sound_grid_whose_cells_the_backend_refuses(tmp_path, capsys):
    spec = write_spec(tmp_path, """
        grid:
          params: {model: no-such-model}
        axes:
          seed: 1, 2
    """)
    assert main(["validate", "--json", str(spec)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert [(error["line"], "no-such-model" in error["message"]) for error in report["errors"]] == [(2, True)]
    assert report["cell_count"] == 2 and [axis["id"] for axis in report["axes"]] == ["seed"]
