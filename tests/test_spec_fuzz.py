"""Property test: mutated grid files either load or raise the project's located SpecError.

Any other exception escaping the loader would reach the user as a traceback.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridgen.errors import SpecError
from gridgen.spec import load_spec
from tests.spec_helpers import SHARED_FIXTURES

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "grids" / "demo.yaml", SHARED_FIXTURES / "short_example.yml", SHARED_FIXTURES / "megagrid.yml"]
SNIPPETS = ["\n", ":", " ", "  ", "- ", "||", ",", "...", "1-5 (-1)", "[", "{", "}", "'", '"', "=", "#",
            "params:", "values:", "skip: true", "default: nope", "include: x.yaml", "steps: 0",
            "\t", "&a", "*a", "<<: *a", "!!python/object:os.system", "-1", "1e999", "null", "~", "é"]


def _sources():
    available = [path for path in SOURCES if path.exists()]
    if len(available) < len(SOURCES):
        missing = ", ".join(str(p) for p in SOURCES if not p.exists())
        pytest.skip(f"the shared Infinity Grid fixtures are absent ({missing})")
    return [path.read_text(encoding="utf-8") for path in available]


@st.composite
def mutations(draw, texts):
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        operation = draw(st.sampled_from(["insert", "delete", "replace_line", "dedent"]))
        if operation == "insert":
            text = text[:position] + draw(st.sampled_from(SNIPPETS)) + text[position:]
        elif operation == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 40)):]
        else:
            lines = text.split("\n")
            index = position % max(len(lines), 1)
            if operation == "replace_line":
                lines[index] = draw(st.sampled_from(SNIPPETS)) + lines[index].lstrip()
            else:
                lines[index] = lines[index][2:]
            text = "\n".join(lines)
    return text


@pytest.fixture(scope="module")
def texts():
    return _sources()


def test_mutated_specs_load_or_raise_located_errors(texts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutations(texts))
    def check(text):
        path = folder / "spec.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_spec(path)
        except SpecError as err:
            assert err.problems
            for problem in err.problems:
                assert problem.location is not None and problem.location.file == path
                assert problem.message

    check()
