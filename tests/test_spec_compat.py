"""Specs written for Infinity Grid or A1111's X/Y/Z plot load in gridgen as those tools read them.

Value ids that never collide, the peers' parameter names, the softer rules they apply (repeats,
empty values, skipped and invalid values, defaults), and the warnings where gridgen differs on purpose.
"""

import pytest

from gridgen.spec import load_spec, slugify
from gridgen.spec.ids import unique_ids
from tests.spec_helpers import problems_of, write_spec


def _axes(path, **kwargs):
    spec = load_spec(path, **kwargs)
    return spec, {axis.id: axis for axis in spec.axes}


@pytest.mark.parametrize(("values", "ids"), [
    ("日本, 中国", ["日本", "中国"]),
    ("кот, пёс", ["кот", "пёс"]),
    ("हिन्दी, Ελληνικά", ["हिन्दी", "ελληνικά"]),
    ("Cat, cat, CAT", ["cat", "cat__2", "cat__3"]),
    ("a b, a_b, a-b", ["a_b", "a_b__2", "a_b__3"]),
    ("con, nul, aux.txt", ["con_", "nul_", "aux_txt"]),
    ("$$, %%", ["_", "___2"]),
    ("a __colour__ cat, a_colour_cat", ["a_colour_cat", "a_colour_cat__2"]),  # wildcards collapse as text
])
def test_value_ids_keep_every_script_and_never_collide(tmp_path, values, ids):
    spec, axes = _axes(write_spec(tmp_path, f"axes:\n  prompt: {values}\n"))
    assert [v.id for v in axes["prompt"].values] == ids
    assert [v.title for v in axes["prompt"].values] == [t.strip() for t in values.split(",")]  # as written


def test_signs_repeats_and_long_values(tmp_path):
    _, axes = _axes(write_spec(tmp_path, "axes:\n  seed: -1, 1, 1, 2\n  prompt: " + "x" * 80 + ", " + "x" * 81 + "\n"))
    assert [v.id for v in axes["seed"].values] == ["minus_1", "1", "1__2", "2"]
    assert [v.params["seed"] for v in axes["seed"].values] == [-1, 1, 1, 2]
    long_ids = [v.id for v in axes["prompt"].values]
    assert len(set(long_ids)) == 2 and all(len(i) <= 48 for i in long_ids)


def test_ids_are_their_own_slugs():
    for text in ("Euler a", "-1", "日本 語", "con", "x" * 90, "1__2"):
        assert slugify(slugify(text)) == slugify(text)
    assert unique_ids(["a", "a", "a__2"]) == ["a", "a__2", "a__2__2"]


def test_counted_ranges_fills_numbers_and_empty_values(tmp_path):
    spec, axes = _axes(write_spec(tmp_path, """
        axes:
          steps: 1-10 [5]
          seed: 1, 3, ..., 10
          cfg_scale: 1_000e-3, 2
          prompt: ''
    """))
    assert [v.params["steps"] for v in axes["steps"].values] == [1, 3, 5, 7, 10]
    assert [v.params["seed"] for v in axes["seed"].values] == [1, 3, 5, 7, 10]
    assert [v.params["cfg_scale"] for v in axes["cfg_scale"].values] == [1.0, 2.0]
    assert [v.params["prompt"] for v in axes["prompt"].values] == [""]
    assert spec.warnings == []


def test_float_fill_is_exact_and_says_how_infinity_grid_differs(tmp_path):
    spec, axes = _axes(write_spec(tmp_path, "axes:\n  cfg scale: 0.1, 0.2, ..., 0.7\n"))
    assert [v.params["cfg_scale"] for v in axes["cfg_scale"].values] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    (note,) = spec.warnings
    assert "Infinity Grid fills 0.1, 0.2, ..., 0.7 in floats and loses 1 value(s)" in note.message
    assert (note.location.line, note.location.col) == (2, 14)


def test_short_prompt_replace_and_numbered_replaces(tmp_path):
    _, axes = _axes(write_spec(tmp_path, """
        grid: {params: {prompt: a cat on a mat}}
        axes:
          promptreplace: cat, dog, waffle
          both:
            title: Both
            values:
              one: {title: One, params: {Prompt Replace 1: cat = owl, Prompt Replace 2: mat = rug}}
          Prompt S/R: mat, sofa
    """))
    replace = axes["promptreplace"].values
    assert [v.title for v in replace] == ["cat", "dog", "waffle"]
    assert [v.params["prompt_replace"] for v in replace] == [["cat=cat"], ["cat=dog"], ["cat=waffle"]]
    assert axes["both"].values[0].params["prompt_replace"] == ["cat = owl", "mat = rug"]
    assert [v.params["prompt_replace"] for v in axes["prompt_s_r"].values] == [["mat=mat"], ["mat=sofa"]]


@pytest.mark.parametrize(("name", "value", "param", "expected"), [
    ("Denoising", "0.4", "denoise", 0.4),
    ("Enable HighRes Fix", "true", "upscaler", "latent"),
    ("Enable HighRes Fix", "false", "upscaler", "none"),
    ("HighRes Upscaler", "Lanczos", "upscaler", "hires:lanczos"),
    ("HighRes Upscaler", "Latent (bicubic)", "upscaler", "latent-bicubic"),
    ("HighRes Scale", "1.5", "upscale_by", 1.5),
    ("HighRes Steps", "12", "hires_steps", 12),
    ("HighRes Resize Width", "640", "upscale_width", 640),
    ("HighRes Denoising Strength", "0.3", "hires_denoise", 0.3),
    ("Checkpoint name", "gridgen-tiny", "model", "gridgen-tiny"),
    ("VAE", "None", "vae", "auto"),
    ("VAE", "automatic", "vae", "auto"),
    ("sampler", "2m karras", "sampler", "DPM++ 2M Karras"),
    ("Sampler", "dpm2 a karras", "sampler", "DPM2 a Karras"),
])
def test_peer_parameter_names_resolve(tmp_path, name, value, param, expected):
    spec = load_spec(write_spec(tmp_path, f"grid: {{params: {{'{name}': '{value}'}}}}\naxes:\n  seed: 1\n"))
    assert spec.base_params[param] == expected


def test_ambiguous_partial_sampler_is_an_error(tmp_path):
    (problem,) = problems_of(write_spec(tmp_path, "axes:\n  sampler: sde karras\n"))
    assert "'sde karras' is not one of" in problem.message


def test_unsupported_params_warn_once_and_the_other_axes_render(tmp_path):
    path = write_spec(tmp_path, """
        grid: {params: {Restore Faces: true}}
        axes:
          CodeFormer Weight: 0, 0.5
          Face restoration: CodeFormer, GFPGAN
          Hypernet str.: 0, 1
          Use Result Index: 1, 2
          seed: 1, 2
          x:
            title: X
            values:
              a: {title: A, params: {Hypernetwork: anime, steps: 3}}
    """)
    spec, axes = _axes(path)
    assert list(axes) == ["seed", "x"] and spec.cell_count == 2
    assert axes["x"].values[0].params == {"steps": 3}
    messages = [w.message for w in spec.warnings]
    assert len(messages) == 6  # one per param: restore_faces, codeformer_weight, face_restoration,
    # hypernetwork_strength, result_index, hypernetwork
    assert "parameter 'restore_faces' is not supported by this backend and is ignored" in messages
    assert "parameter 'face_restoration' is not supported by this backend and the axis is left out" in messages
    assert "parameter 'hypernetwork_strength' ('Hypernet str.') is not supported by this backend and the axis is " \
           "left out" in messages
    assert any("result_index" in m and "one image per cell" in m for m in messages)
    assert all("--strict" in p.message for p in problems_of(path, strict=True))


def test_skipped_and_invalid_values_and_skip_invalid(tmp_path):
    text = """
        grid: {{skip_invalid: {flag}}}
        axes:
          steps:
            title: Steps
            values:
              ok: steps=5
              bad: steps=abc
              hidden: {{title: H, skip: true, params: {{steps: -4}}}}
    """
    spec, axes = _axes(write_spec(tmp_path, text.format(flag="true")))
    assert [(v.id, v.skip) for v in axes["steps"].values] == [("ok", False), ("bad", True), ("hidden", True)]
    assert any("skip_invalid" in w.message for w in spec.warnings)
    assert any("the value is skipped" in w.message and w.location.line == 8 for w in spec.warnings)
    (problem,) = problems_of(write_spec(tmp_path, text.format(flag="false"), name="strict.yaml"))
    assert "steps must be a whole number" in problem.message and problem.location.line == 7


def test_defaults_by_value_then_position_and_unknown(tmp_path):
    spec, axes = _axes(write_spec(tmp_path, """
        axes:
          steps: {title: Steps, values: "10, 20, 1", default: 1}
          seed: {title: Seed, values: "5, 6, 7", default: 2}
          cfg: {title: CFG, default: nope, values: {a: cfg=3, b: cfg=4}}
    """))
    assert axes["steps"].default == "1" and axes["seed"].default == "6" and axes["cfg"].default is None
    messages = " | ".join(w.message for w in spec.warnings)
    assert "Infinity Grid reads a listed axis's default as a position and would pick value 1 in order ('10')" \
        in messages
    assert "default 'nope' names no value of axis 'CFG'" in messages


def test_variables_split_first_match_any_case_and_axes_of_one_param_both_stay(tmp_path):
    spec, axes = _axes(write_spec(tmp_path, """
        variables: {<Colour>: "red, blue"}
        axes:
          prompt: a <colour> car, a <COLOUR> bus
          cfg scale: 3, 4
          cfg_scale: 5, 6
          seed: 1, 2
    """))
    assert [v.params["prompt"] for v in axes["prompt"].values] == ["a red, blue car", "a red, blue bus"]
    assert list(axes) == ["prompt", "cfg_scale", "cfg_scale__2", "seed"] and spec.cell_count == 16


def test_every_value_skipped_is_a_warning_with_zero_cells_to_render(tmp_path):
    spec, _ = _axes(write_spec(tmp_path, "axes:\n  s:\n    title: S\n    values:\n      a: {title: A, skip: true, "
                                         "params: {seed: 1}}\n  seed: 1, 2\n"))
    assert spec.cell_count == 2 and "zero cells to render" in spec.warnings[0].message


def test_a_grid_of_ignored_axes_only_says_why_it_is_empty(tmp_path):
    (problem,) = problems_of(write_spec(tmp_path, "axes:\n  Restore Faces: true, false\n  Hypernetwork: a, b\n"))
    assert "the grid has no axes (axes Restore Faces, Hypernetwork vary only ignored parameters)" \
        in problem.message


def test_csv_quotes_and_mixed_case_variables_warn_how_infinity_grid_differs(tmp_path):
    spec, axes = _axes(write_spec(tmp_path, """
        variables: {<Colour>: red}
        axes:
          prompt: '"a <colour> cat, sitting", a dog'
    """))
    assert [v.params["prompt"] for v in axes["prompt"].values] == ["a red cat, sitting", "a dog"]
    notes = {w.location.line: w.message for w in spec.warnings}
    assert "Infinity Grid lower-cases variable names and would replace only '<colour>'" in notes[1]
    assert "Infinity Grid splits on every comma" in notes[3]
