"""Hostile-spec benchmark: what `gridgen validate` costs on specs that ask for too much.

Each spec runs `gridgen validate` in a fresh interpreter, which reports its own peak resident memory
(VmHWM from /proc/self/status); the wall time is measured around the child and includes the
interpreter's start. Prints, per spec, the exit code, seconds, MB and the first problem line, and
the ratio of each figure to the targets (2 s, 300 MB): below 1.0 meets them. Not a test: nothing
asserts (tests/test_hostile_fuzz.py holds the asserted property).

    .venv/bin/python bench/hostile_specs.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S, TARGET_MB = 2.0, 300.0
BASE = "grid:\n  params: {model: gridgen-tiny, steps: 1, width: 32, height: 32}\n"
SPECS = {
    "seed: 1-100000000": BASE + "axes:\n  seed: 1-100000000\n",
    "cfg_scale: 0-1 [1000000000]": BASE + "axes:\n  cfg_scale: 0-1 [1000000000]\n",
    "seed: 1, 2, ..., 100000000": BASE + "axes:\n  seed: 1, 2, ..., 100000000\n",
    "60 two-value axes": BASE + "axes:\n" + "".join(
        f"  v{i}:\n    values:\n      a: {{params: {{seed: 1}}}}\n      b: {{params: {{seed: 2}}}}\n"
        for i in range(60)),
    "seed 1-1000000 x steps 1-1000": BASE + "axes:\n  seed: 1-1000000\n  steps: 1-1000\n",
    "9-level alias bomb": "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + BASE + "axes:\n  seed: 1\n",
    "10 variables, each 10 of the next": "variables:\n" + "".join(
        f"  v{i}: {' '.join([f'v{i + 1}'] * 10)}\n" for i in range(10))
        + "grid:\n  params: {model: gridgen-tiny, prompt: v0}\naxes:\n  seed: 1\n",
    "1,000 levels of nesting": BASE + "axes:\n  seed: " + "[" * 1000 + "]" * 1000 + "\n",
    "recursive alias": "a: &a [*a]\n" + BASE + "axes:\n  seed: 1\n",
    "25,000-item list": BASE + "axes:\n  seed: [" + ", ".join(["1"] * 25_000) + "]\n",
}
CHILD = """
import re, sys
from gridgen.cli import main
code = main(["validate", sys.argv[1]])
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024, file=sys.stderr)
sys.exit(code)
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        print(f"{'spec':36} {'exit':>4} {'s':>6} {'MB':>6} {'s/2s':>6} {'MB/300':>7}  first problem")
        for name, text in SPECS.items():
            path.write_text(text, encoding="utf-8")
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=600)
            seconds = time.perf_counter() - started
            lines = done.stderr.strip().splitlines()
            peak = float(lines[-1])
            first = lines[0].replace(str(path), "spec.yaml")[:90] if len(lines) > 1 else ""
            print(f"{name:36} {done.returncode:>4} {seconds:6.2f} {peak:6.0f} {seconds / TARGET_S:6.2f} "
                  f"{peak / TARGET_MB:7.2f}  {first}")


if __name__ == "__main__":
    main()
