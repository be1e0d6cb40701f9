"""Differential test: Infinity Grid's own parser and gridgen read the same specs the same way.

Hypothesis writes specs in the Infinity Grid format (list axes with fills and repeats, `||` lists,
non-English values, variables, the short prompt replace, full-form axes with skip/show/default,
skip_invalid); where Infinity Grid accepts one, gridgen must load it and agree on the axes, values,
titles, params, skip/show, defaults and cell counts. The differences gridgen makes on purpose are
few and each is announced by a warning, which the test requires before it excuses the difference:

- decimal fills are exact where Infinity Grid's float fill loses or adds a value (`0.1, 0.2, ..., 0.7`);
- `default: 2` on a listed axis picks the value 2 where one exists; Infinity Grid reads a position.
And where the two only format alike things differently, the comparison reads them alike: numbers
by value (Infinity Grid titles `7` as `7.0`), sampler titles by name (it titles `euler a` as `Euler a`),
titles stripped (it keeps the space of `PromptReplace= a = b`), a skipped value's params not compared
(it keeps them raw, neither checked nor with variables substituted; nothing renders them), axis titles
whatever their case (it lower-cases axis keys, so `Seed: 1, 2` is titled `seed` there and `Seed`/`seed`
are one axis).
"""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridgen.backends.sd.denoise.samplers import SAMPLERS
from gridgen.errors import SpecError
from gridgen.spec import load_spec, slugify
from tests.peer_oracle import cell_counts, gridgen_form, infinity_grid, parse_with_infinity_grid, peer_form
from tests.spec_helpers import SHARED_FIXTURES

__all__ = ["infinity_grid"]  # the fixture, imported for pytest to find

WORDS = ["cat", "dog", "Cat", "a red car", "日本", "中国", "кот", "пёс", "Ünïcode", "x y", "x_y", "(v)", "<w>", ""]
FLOAT_DRIFT = "in floats and"
POSITION_DEFAULT = "reads a listed axis's default as a position"


def _number_list(draw, low: int, high: int, scale: int) -> str:
    """Numbers and fills (`a, b, ..., c`); `scale` 1 writes whole numbers, 10 or 100 decimals."""
    def written(units: int) -> str:
        return str(units) if scale == 1 else f"{units / scale:.{len(str(scale)) - 1}f}"

    items: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        first = draw(st.integers(low * scale, high * scale))
        if draw(st.booleans()):
            # A fill, mostly one that reaches its end, whose end may fall between steps (`1, 3, ..., 10`).
            step = draw(st.integers(1, max(1, (high - low) * scale // 4))) * draw(st.sampled_from([1, 1, -1]))
            end = first + step * draw(st.integers(1, 6)) + (step // abs(step)) * draw(st.integers(0, abs(step)))
            units = [first, first + step, end]
            if all(low * scale <= u <= high * scale for u in units):
                items += [written(units[0]), written(units[1]), "...", written(units[2])]
                continue
        items += [written(first)] + [written(draw(st.integers(low * scale, high * scale)))
                                     for _ in range(draw(st.integers(0, 2)))]
    return ", ".join(items)


@st.composite
def list_axis(draw):
    kind = draw(st.sampled_from(["seed", "steps", "cfg", "denoise", "prompt", "sampler", "replace"]))
    if kind == "seed":
        return draw(st.sampled_from(["seed", "Seed"])), _number_list(draw, 0, 40, 1)
    if kind == "steps":
        return draw(st.sampled_from(["steps", "Steps"])), _number_list(draw, 1, 60, 1)
    if kind == "cfg":
        return draw(st.sampled_from(["cfg scale", "CFG Scale", "cfgscale", "cfg_scale"])), _number_list(draw, 0, 30, 10)
    if kind == "denoise":
        return "Denoising", _number_list(draw, 0, 1, 100)
    if kind == "sampler":
        names = draw(st.lists(st.sampled_from([s.name for s in SAMPLERS]), min_size=1, max_size=4))
        return "sampler", ", ".join(draw(st.sampled_from([n, n.lower(), n.upper()])) for n in names)
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=5))
    if kind == "replace":
        if draw(st.booleans()):  # the long form, `find = replace`
            words = [f"{words[0] or 'cat'} = {word}" for word in words]
        elif not words[0]:
            words[0] = "cat"
        return draw(st.sampled_from(["promptreplace", "Prompt Replace"])), ", ".join(words)
    if draw(st.booleans()):
        return draw(st.sampled_from(["prompt", "Negative Prompt"])), " || ".join(w + ", more" for w in words)
    return draw(st.sampled_from(["prompt", "negative prompt"])), ", ".join(words)


@st.composite
def full_value(draw):
    param, value = draw(st.sampled_from([
        ("steps", st.integers(1, 60)), ("seed", st.integers(-1, 99)), ("cfg scale", st.integers(0, 30)),
        ("prompt", st.sampled_from(WORDS[:-1])), ("sampler", st.sampled_from([s.name for s in SAMPLERS])),
        ("steps", st.just("abc")),  # invalid: an error, or skipped with skip_invalid
    ]))
    raw = draw(value)
    if draw(st.booleans()):
        return f"{param}={raw}"
    entry = {"title": draw(st.sampled_from(["One", "two", "日本語", "Два", str(raw)])), "params": {param: raw}}
    if draw(st.booleans()):
        entry["skip"] = draw(st.booleans())
    if draw(st.booleans()):
        entry["show"] = draw(st.booleans())
    return entry


@st.composite
def map_axis(draw):
    axis = {"title": draw(st.sampled_from(["Steps", "Prompt", "Тест", "A b"]))}
    key = f"ax{draw(st.integers(0, 9))}"
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["a", "A", "b", "10", "20", "日本", "x y", "x_y", "-1", "1"]),
                             min_size=1, max_size=5, unique=True))
        axis["values"] = {key: draw(full_value()) for key in keys}
        choices = [*keys, "nope", "1", "2"]
    else:
        key, values = draw(list_axis())
        axis["values"] = values
        choices = ["1", "2", "3", "5", "nope"]
    if draw(st.booleans()):
        axis["default"] = draw(st.sampled_from(choices))
    return key, axis


@st.composite
def specs(draw):
    grid = {"title": "T", "author": "A", "description": "D", "format": "png"}
    if draw(st.booleans()):
        grid["params"] = {"steps": draw(st.integers(1, 30)), "prompt": "a cat and a dog", "Sampler": "euler"}
    if draw(st.booleans()):
        grid["skip_invalid"] = True
    axes = {}
    for _ in range(draw(st.integers(1, 3))):
        key, body = draw(st.one_of(list_axis(), map_axis()))
        if key.lower() not in {k.lower() for k in axes}:  # Infinity Grid lower-cases axis keys, merging these
            axes[key] = body
    spec = {"grid": grid, "axes": axes}
    if draw(st.booleans()):
        spec["variables"] = {"(v)": "dog", "<w>": "red, car"}
    return yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)


def _agreement(core, text: str, path) -> bool:
    """Assert gridgen reads `text` as Infinity Grid does; False where Infinity Grid itself refuses it."""
    try:
        grid = parse_with_infinity_grid(core, text)
    except (RuntimeError, ValueError, ZeroDivisionError, AttributeError, TypeError):
        return False  # refused by Infinity Grid: gridgen may refuse it too, or accept more
    path.write_text(text, encoding="utf-8")
    try:
        spec = load_spec(path)
    except SpecError as err:
        raise AssertionError(f"Infinity Grid reads this spec, gridgen refuses it:\n{text}\n{err}") from None
    peer, ours = peer_form(grid), gridgen_form(spec)
    assert ours["params"] == peer["params"], text
    assert len(ours["axes"]) == len(peer["axes"]), text
    notes = [w.message for w in spec.warnings]
    drifted = any(FLOAT_DRIFT in n for n in notes)
    for axis, peer_axis, ours_axis in zip(spec.axes, peer["axes"], ours["axes"], strict=True):
        announced = [n for n in notes if any(name == axis.title or slugify(name) == axis.id.split("__")[0]
                                             for name in re.findall(r"axis '([^']*)'", n))]
        assert ours_axis["title"].lower() == peer_axis["title"].lower()  # its axis keys are lower-cased
        assert len({v.id for v in axis.values}) == len(axis.values), "value ids collide"
        if any(FLOAT_DRIFT in n for n in announced):
            continue  # the exact fill, announced
        sampler_axis = all(set(v["params"]) == {"sampler"} for v in peer_axis["values"])
        for peer_value, our_value in zip(peer_axis["values"], ours_axis["values"], strict=True):
            if sampler_axis and isinstance(peer_value["title"], str):
                peer_value["title"], our_value["title"] = peer_value["title"].lower(), our_value["title"].lower()
            for value in (peer_value, our_value):
                value["title"] = value["title"].strip() if isinstance(value["title"], str) else value["title"]
                if value["skip"]:  # never rendered: Infinity Grid neither checks nor substitutes its params
                    value["params"] = None
            assert our_value == peer_value, text
        if peer_axis["default"] is not None and not any(POSITION_DEFAULT in n for n in announced):
            assert ours_axis["default"] == peer_axis["default"], text
    if not drifted:
        assert cell_counts(ours) == cell_counts(peer), text
        assert spec.cell_count == cell_counts(peer)[0]
    return True


def test_generated_specs_expand_as_infinity_grid_expands_them(infinity_grid, tmp_path):
    agreed = []

    @settings(max_examples=700, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(specs())
    def check(text):
        if _agreement(infinity_grid, text, tmp_path / "spec.yml"):
            agreed.append(text)

    check()
    assert len(agreed) >= 500, f"only {len(agreed)} generated specs were ones Infinity Grid accepts"


README_EXAMPLES = [
    # The Infinity Grid README's own examples, each inside a minimal grid.
    "sampler: Euler, DDIM\nseed: 1, 2, 3",
    "seed: 1, 2, ..., 10",
    "cfg scale: 7.0, 7.1, ..., 7.8",  # Infinity Grid's float fill loses 7.7: an announced difference
    "prompt: 1girl, booru style, commas || 1boy, more commas, etc",
    "promptreplace: cat, dog, waffle",
    "steps:\n  title: Steps\n  values:\n    10: steps=10\n    20:\n      title: Twenty\n      params: {steps: 20}",
    "x:\n  title: Two replaces\n  values:\n    a:\n      title: A\n"
    "      params: {Prompt Replace 1: cat = dog, Prompt Replace 2: red = blue}",
]


def test_readme_examples_and_short_example_agree(infinity_grid, tmp_path):
    grid = "grid: {title: T, author: A, description: D, format: jpg, params: {prompt: a red cat}}\naxes:\n"
    for example in README_EXAMPLES:
        body = "\n".join("  " + line for line in example.splitlines())
        assert _agreement(infinity_grid, grid + body + "\n", tmp_path / "spec.yml"), example
    assert _agreement(infinity_grid, (SHARED_FIXTURES / "short_example.yml").read_text(), tmp_path / "short.yml")


def test_a_param_value_is_titled_by_its_value_not_its_key(infinity_grid, tmp_path):
    """`fifteen: steps=15` is titled "15", as Infinity Grid titles it; the key names the value (its id, its image
    path), as it does there."""
    text = ("grid: {title: T, author: A, description: D, format: png}\n"
            "axes:\n  steps:\n    title: Steps\n    values:\n      fifteen: steps=15\n      many: steps=40\n")
    assert _agreement(infinity_grid, text, tmp_path / "spec.yml")
    peer = parse_with_infinity_grid(infinity_grid, text)
    assert [str(value.title) for value in peer.axes[0].values] == ["15", "40"]
    values = load_spec(tmp_path / "spec.yml").axes[0].values
    assert [(value.key, value.id, value.title) for value in values] == [("fifteen", "fifteen", "15"),
                                                                        ("many", "many", "40")]
