"""Property test: generated hostile specs (deep nesting, alias bombs, huge ranges and numbers, control
characters, wrong tags, variable chains, many axes) load or raise a located SpecError, each within 2 s
and 300 MB, never another exception.

Each spec is loaded in a fresh interpreter, which reports its own time and its own peak resident memory
(VmHWM from /proc/self/status: ru_maxrss would carry the test process's figure across the fork).
"""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = "grid:\n  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32}\n"
CHILD = """
import json, re, sys, time
from gridgen.errors import SpecError
from gridgen.spec import load_spec
started = time.perf_counter()
try:
    load_spec(sys.argv[1])
    outcome = {"problems": []}
except SpecError as err:
    outcome = {"problems": [[str(p.location.file) if p.location and p.location.file else None,
                             p.location.line if p.location else 0, p.message]
                            for p in err.problems if p.severity == "error"]}
outcome["seconds"] = time.perf_counter() - started
status = open("/proc/self/status").read()
outcome["peak_mb"] = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(json.dumps(outcome))
"""

deep = st.builds(lambda n, opener: "axes:\n  seed: " + opener[0] * n + "1" + opener[1] * n + "\n",
                 st.integers(60, 5000), st.sampled_from([("[", "]"), ("{a: ", "}")]))
alias_bomb = st.builds(
    lambda levels, width: "a0: &a0 [" + ", ".join(["x"] * width) + "]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]\n" for i in range(1, levels)) + BASE
    + "axes:\n  seed: 1\n", st.integers(3, 14), st.integers(2, 14))
self_alias = st.sampled_from(["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, [2, *a]]\n"]).map(
    lambda text: text + BASE + "axes:\n  seed: 1\n")
huge = st.integers(10**4, 10**40)
huge_range = st.one_of(
    huge.map(lambda n: f"seed: 1-{n}"), huge.map(lambda n: f"cfg_scale: 0-1 [{n}]"),
    huge.map(lambda n: f"seed: 1, 2, ..., {n}"), huge.map(lambda n: f"steps: 1-{n} (+1)"),
    st.integers(1, 10**6).map(lambda n: f"seed: 1-{n}, 1-{n}, 1-{n}"),
).map(lambda axis: BASE + "axes:\n  " + axis + "\n")
many_axes = st.integers(18, 120).map(lambda n: BASE + "axes:\n" + "".join(
    f"  v{i}:\n    values:\n      a: {{params: {{seed: 1}}}}\n      b: {{params: {{seed: 2}}}}\n" for i in range(n)))
huge_number = st.builds(lambda param, digits, tail: f"grid:\n  params: {{model: gridgen-tiny, {param}: "
                        f"{'9' * digits}{tail}}}\naxes:\n  seed: 1\n",
                        st.sampled_from(["steps", "seed", "cfg_scale", "width", "denoise"]), st.integers(20, 5000),
                        st.sampled_from(["", ".5", "e99999", "e-99999"]))
wrong_tag = st.builds(lambda tag, value: BASE + f"axes:\n  seed: {tag} {value}\n",
                      st.sampled_from(["!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary", "!!set",
                                       "!!omap", "!!python/object:os.system", "!custom", "!!str", "!!map", "!!seq"]),
                      st.sampled_from(["'x'", "1", "[1, 2]", "{a: 1}", "''", "2001-01-01", "aGVsbG8="]))
variable_chain = st.builds(lambda count, fanout: "variables:\n" + "".join(
    f"  v{i}: {' '.join([f'v{i + 1}'] * fanout)}\n" for i in range(count))
    + "grid:\n  params: {model: gridgen-tiny, prompt: v0}\naxes:\n  seed: 1\n", st.integers(2, 30), st.integers(2, 40))
controls = st.builds(lambda text, position, char: text[:position % (len(text) + 1)] + char
                     + text[position % (len(text) + 1):],
                     st.just(BASE + "axes:\n  seed: 1, 2\n  steps: 3, 4\n"), st.integers(0, 200),
                     st.sampled_from([chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127, 0x85, 0x9F,
                                                       0xD800, 0xFFFE)]))
hostile = st.one_of(deep, alias_bomb, self_alias, huge_range, many_axes, huge_number, wrong_tag, variable_chain,
                    controls)


def test_hostile_specs_fail_located_within_two_seconds_and_300_mb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hostile)
    def check(text):
        path = folder / "spec.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
        assert outcome["seconds"] < 2.0, (outcome["seconds"], text[:300])
        assert outcome["peak_mb"] < 300, (outcome["peak_mb"], text[:300])
        for file, line, message in outcome["problems"]:
            assert file == str(path) and line >= 1 and message, (file, line, message)

    check()
