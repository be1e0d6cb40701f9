"""Planning: parameter resolution, cell order, skips and located backend problems (no torch needed)."""

from __future__ import annotations

from itertools import groupby

from gridgen import params as P
from gridgen.backends.base import ParamProblem
from gridgen.plan import make_plan
from gridgen.spec import load_spec
from tests.spec_helpers import write_spec


class FakeBackend:
    """Loads a 'model' per distinct model param; batches by sampler and steps."""

    name = "fake"

    def supported_params(self):
        return {p.name for p in P.CORE_PARAMS}

    def extra_params(self):
        return []

    def validate(self, params):
        if params["model"] == "missing":
            return [ParamProblem("model", "model 'missing' not found")]
        return []

    def load_key(self, params):
        return params["model"]

    def batch_key(self, params):
        return (params["model"], params["sampler"], params["steps"])

    def describe_load(self, params):
        return f"model {params['model']}"


def _plan(tmp_path, text):
    spec = load_spec(write_spec(tmp_path, text))
    return make_plan(spec, FakeBackend(), P.Registry(), random_seed=1234)


def test_models_load_once_whatever_the_yaml_order(tmp_path):
    plan = _plan(tmp_path, """
        axes:
          seed: 1, 2, 3
          sampler: Euler || DDIM
          steps: 5, 10
          model: a, b, c
    """)
    cells = list(plan.cells())
    assert len(cells) == 36
    models = [key for key, _ in groupby(c.params["model"] for c in cells)]
    assert models == ["a", "b", "c"]
    batches = [key for key, _ in groupby(FakeBackend().batch_key(c.params) for c in cells)]
    assert len(batches) == 12  # every (model, sampler, steps) is one contiguous run
    assert plan.loads() == ["model a", "model b", "model c"]
    # Keys and paths use the spec's axis order, whatever the render order.
    assert cells[0].key == "1/euler/5/a" and cells[0].image_path == "images/1/euler/5/a.png"
    assert sorted(c.index for c in cells) == list(range(36))


def test_resolution_layers_and_prompt_replace(tmp_path):
    plan = _plan(tmp_path, """
        grid:
          params: {prompt: a cat in PLACE <hypernet:x:1>, negative_prompt: PLACE, seed: -1, steps: 9}
        axes:
          place:
            title: Place
            values:
              a: {title: A, params: {prompt_replace: PLACE = a field}}
          prompt_replace: STYLE = x, cat = dog
    """)
    cells = list(plan.cells())
    assert cells[1].params["prompt"] == "a dog in a field"
    assert cells[1].params["negative_prompt"] == "a field"
    assert cells[1].params["prompt_replace"] == ["PLACE = a field", "cat = dog"]
    assert cells[0].params["seed"] == 1234 and cells[0].params["steps"] == 9
    assert cells[0].params["cfg_scale"] == 7.0  # registry default
    assert any("hypernet" in w.message for w in plan.warnings)


def test_backend_problems_point_at_the_value_that_set_the_param(tmp_path):
    plan = _plan(tmp_path, """
        axes:
          model:
            title: Model
            values:
              ok: model=fine
              bad: model=missing
          seed: 1, 2
    """)
    (problem,) = [p for p in plan.validate() if p.severity == "error"]
    assert problem.message == "model 'missing' not found"
    assert (problem.location.line, problem.location.col) == (6, 12)


def test_skipped_values_mark_cells(tmp_path):
    plan = _plan(tmp_path, """
        axes:
          seed:
            title: Seed
            values:
              one: seed=1
              two: {title: two, skip: true, params: {seed: 2}}
          steps: 3, 4
    """)
    assert {c.key: c.skip for c in plan.cells()} == {"one/3": False, "one/4": False, "two/3": True, "two/4": True}
