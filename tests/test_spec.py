"""Loading grid specs: every syntax form, and every user error located at its line and column."""

from pathlib import Path

import pytest

from gridgen.errors import SpecError
from gridgen.spec import load_spec
from tests.spec_helpers import problems_of, write_spec


def test_full_form_axis_and_values(tmp_path):
    path = write_spec(tmp_path, """
        grid:
          title: T
          author: A
          description: <b>hi</b>
          format: webp
          stylesheet: "h1 { color: red; }"
          skip_invalid: true
          show descriptions: false
          autoscale: true
          sticky: true
          x axis: cfg
          y axis: Steps
          x super axis: None
          params:
            Steps: 12
            CFG Scale: 5
        axes:
          steps:
            title: Steps
            description: how many
            default: 20
            values:
              10:
                title: Ten
                description: few
                params: {steps: 10}
              secret:
                title: Secret
                skip: true
                show: false
                params: {steps: 150}
              20: steps=20
          cfg: 3, 5
    """)
    spec = load_spec(path)
    meta = spec.meta
    assert (meta.title, meta.author, meta.description, meta.format) == ("T", "A", "<b>hi</b>", "webp")
    assert meta.skip_invalid is True
    assert meta.page["show_descriptions"] is False and meta.page["autoscale"] is True
    assert meta.page["x_axis"] == "cfg" and meta.page["y_axis"] == "steps" and meta.page["x_super_axis"] is None
    assert spec.base_params == {"steps": 12, "cfg_scale": 5.0}
    steps = spec.axes[0]
    assert [v.id for v in steps.values] == ["10", "secret", "20"]
    assert steps.default == "20"
    assert steps.values[0].title == "Ten" and steps.values[0].description == "few"
    assert steps.values[1].skip and not steps.values[1].show
    assert steps.values[2].params == {"steps": 20} and steps.values[2].title == "20"
    assert [v.params for v in spec.axes[1].values] == [{"cfg_scale": 3.0}, {"cfg_scale": 5.0}]
    assert spec.cell_count == 6


def test_short_forms_and_ranges(tmp_path):
    path = write_spec(tmp_path, """
        axes:
          seed: 1, 2, 3
          prompt: a cat, sitting || a dog
          steps: 10, 20, ..., 50
          cfg_scale: 7.0, 7.5, ..., 9.0
          clip_skip: 1-3
          width: 64-128 (+32)
          out_width: 10-1 (-3)
          height: 64-192 [3]
    """)
    spec = load_spec(path)
    got = {axis.id: [next(iter(v.params.values())) for v in axis.values] for axis in spec.axes}
    assert got == {
        "seed": [1, 2, 3], "prompt": ["a cat, sitting", "a dog"], "steps": [10, 20, 30, 40, 50],
        "cfg_scale": [7.0, 7.5, 8.0, 8.5, 9.0], "clip_skip": [1, 2, 3], "width": [64, 96, 128],
        "out_width": [10, 7, 4, 1], "height": [64, 128, 192],
    }
    assert [v.id for v in spec.axes[1].values] == ["a_cat_sitting", "a_dog"]


def test_param_names_match_loosely(tmp_path):
    path = write_spec(tmp_path, """
        grid:
          params: {CFG Scale: 4, cfgscale: 5, cfg_scale: 6, OutWidth: 32, "Negative Prompt": no}
        axes:
          Sampler Name: euler a || DPM++ 2M Karras || dpmpp_2m
    """)
    spec = load_spec(path)
    assert spec.base_params["cfg_scale"] == 6.0
    assert spec.base_params["out_width"] == 32
    assert spec.base_params["negative_prompt"] == "False" or spec.base_params["negative_prompt"] in ("no", "False")
    assert [v.params["sampler"] for v in spec.axes[0].values] == ["Euler a", "DPM++ 2M Karras", "DPM++ 2M"]


def test_variables_and_prompt_replace(tmp_path):
    path = write_spec(tmp_path, """
        variables:
          (animal): fox
        grid:
          params: {prompt: a (animal) in a PLACE, negative_prompt: PLACE blur}
        axes:
          place:
            title: Place
            values:
              field: PromptReplace= PLACE = field
              two:
                title: two rules
                params:
                  prompt_replace: [PLACE = forest, in a = under a]
          promptreplace: PLACE = lake, PLACE = sea
    """)
    spec = load_spec(path)
    assert spec.base_params["prompt"] == "a fox in a PLACE"
    assert spec.axes[0].values[0].params == {"prompt_replace": ["PLACE = field"]}
    assert spec.axes[0].values[1].params == {"prompt_replace": ["PLACE = forest", "in a = under a"]}
    assert [v.title for v in spec.axes[1].values] == ["PLACE = lake", "PLACE = sea"]


def test_include_pulls_axes_from_the_bundled_library(tmp_path):
    path = write_spec(tmp_path, """
        include: axes/samplers.yaml
        axes:
          seed: 1, 2
    """)
    spec = load_spec(path)
    sampler = spec.axes[0]
    assert sampler.id == "sampler" and len(sampler.values) == 19
    assert all(v.title and v.description for v in sampler.values)


def test_include_relative_to_the_spec_folder_and_override(tmp_path):
    write_spec(tmp_path, """
        axes:
          seed: 1, 2, 3
          steps: 5, 6
    """, name="lib/mine.yaml")
    path = write_spec(tmp_path, """
        include: [lib/mine.yaml]
        axes:
          seed: 7
    """, name="grid.yaml")
    spec = load_spec(path)
    assert [(a.id, len(a.values)) for a in spec.axes] == [("seed", 1), ("steps", 2)]


def test_overrides_replace_base_params(tmp_path):
    path = write_spec(tmp_path, """
        grid: {params: {steps: 30, model: a}}
        axes: {seed: 1}
    """)
    spec = load_spec(path, overrides={"Steps": "4", "model": "b"})
    assert spec.base_params["steps"] == 4 and spec.base_params["model"] == "b"


def test_resolved_form_loads_back_to_the_same_grid(tmp_path):
    import yaml

    path = write_spec(tmp_path, """
        include: axes/cfg.yaml
        variables: {X: cat}
        grid: {title: T, params: {prompt: a X}}
        axes:
          seed: 1, 2
          prompt: a X || a dog
    """)
    spec = load_spec(path)
    again = write_spec(tmp_path, yaml.safe_dump(spec.resolved, sort_keys=False), name="resolved.yaml")
    reloaded = load_spec(again)
    assert [(a.id, [(v.id, v.params) for v in a.values]) for a in reloaded.axes] == \
        [(a.id, [(v.id, v.params) for v in a.values]) for a in spec.axes]
    assert reloaded.base_params == spec.base_params


def test_unsupported_params_warn_once_or_fail_when_strict(tmp_path):
    path = write_spec(tmp_path, """
        grid: {params: {hypernetwork: a}}
        axes:
          h:
            title: H
            values:
              one: {title: one, params: {Hypernetwork: b}}
              two: {title: two, params: {hypernetwork: c}}
    """)
    spec = load_spec(path)
    assert [w.message for w in spec.warnings] == [
        "parameter 'hypernetwork' is not supported by this backend and is ignored"]
    assert spec.warnings[0].location.line == 1
    problems = problems_of(path, strict=True)
    assert "--strict" in problems[0].message


def _located(problems):
    return sorted((p.location.line, p.location.col) for p in problems)


def test_yaml_syntax_error_is_located(tmp_path):
    path = write_spec(tmp_path, """
        axes:
          seed: 1, 2
          steps: [1, 2
        """)
    (problem,) = problems_of(path)
    assert "YAML syntax error" in problem.message
    assert problem.location.line >= 3


def test_every_error_is_reported_with_its_line(tmp_path):
    path = write_spec(tmp_path, """
        grid:
          params:
            stpes: 20
            steps: 0
            cfg_scale: -1
            width: 100
            seed: abc
        axes:
          sampler: Euler, Eulr
          steps: 5, 3, ..., 10
          empty:
            title: Empty
            values: {}
          cfg:
            title: CFG
            default: 99
            values:
              a: cfg=3
              A: cfg=4
          noval:
            title: No values
    """)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    problems = [p for p in raised.value.problems if p.severity == "error"]
    warnings = {p.location.line: p.message for p in raised.value.problems if p.severity == "warning"}
    by_line = {p.location.line: p.message for p in problems}
    assert "unknown parameter 'stpes'; did you mean 'steps'?" in by_line[3]
    assert "steps must be >= 1" in by_line[4]
    assert "cfg_scale must be >= 0" in by_line[5]
    assert "multiple of 8" in by_line[6]
    assert "seed must be a whole number" in by_line[7]
    assert "'Eulr' is not one of" in by_line[9]
    assert "never reaches its end" in by_line[10]
    assert "axis 'empty' is empty" in by_line[11]
    # Softer, as in Infinity Grid: a default naming no value warns; `a` and `A` are two values (ids a, a__2).
    assert "default '99' names no value" in warnings[16] and 16 not in by_line
    assert 19 not in by_line
    assert "has no `values:`" in by_line[20]
    assert len(problems) == 9
    assert all(p.location.col > 0 and p.location.file == path for p in problems)


def test_missing_include_and_zero_cells(tmp_path):
    path = write_spec(tmp_path, """
        include: axes/nope.yaml
        axes:
          steps:
            title: Steps
            values:
              a: {title: A, skip: true, params: {steps: 3}}
    """)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    problems = raised.value.problems
    errors = " | ".join(p.message for p in problems if p.severity == "error")
    warnings = " | ".join(p.message for p in problems if p.severity == "warning")
    assert "include 'axes/nope.yaml' not found" in errors
    # Every value skipped renders zero cells, as Infinity Grid does: a warning, not an error.
    assert "zero cells to render" in warnings and "zero cells" not in errors
    assert _located(problems)[0] == (1, 10)


def test_grid_without_axes_has_zero_cells(tmp_path):
    path = write_spec(tmp_path, "grid: {title: x}\n")
    (problem,) = problems_of(path)
    assert "zero cells" in problem.message


def test_wrong_shapes_are_errors_not_crashes(tmp_path):
    path = write_spec(tmp_path, """
        grid:
          params: [1, 2]
        axes:
          steps:
            title: Steps
            values:
              a: nonsense
              b: [1]
    """)
    problems = problems_of(path)
    assert {p.location.line for p in problems} == {2, 7, 8}


def test_file_that_is_not_a_mapping(tmp_path):
    path = write_spec(tmp_path, "- just\n- a list\n")
    (problem,) = problems_of(path)
    assert "mapping" in problem.message and problem.location.line == 1


def test_missing_file_is_reported(tmp_path):
    (problem,) = problems_of(Path(tmp_path / "absent.yaml"))
    assert "cannot read the file" in problem.message


def test_an_unknown_grid_format_is_a_located_problem(tmp_path):
    spec = write_spec(tmp_path, "grid:\n  format: bmp\naxes:\n  seed: 1, 2\n")
    problems = problems_of(spec)
    assert [(p.location.line, p.location.col) for p in problems] == [(2, 11)], problems
    assert "format 'bmp' is not one of: png, jpg, webp" in problems[0].message
