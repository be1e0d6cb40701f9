"""One grid run from a spec file to a finished output folder: the steps the CLI, the viewer's
run queue and the executors share.

`prepare` loads the spec, picks the backend, plans and validates without loading a model;
`execute` renders what is not yet on disk through the chosen executor.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gridgen import params as P
from gridgen.backends import available_backends, load_backend
from gridgen.backends.base import BackendContext
from gridgen.errors import GridError, Problem, SpecError
from gridgen.plan import Plan, make_plan
from gridgen.spec import load_spec
from gridgen.spec.limits import DEFAULT_LIMITS, Limits, OverCap
from gridgen.store import Store, previous_random_seed

EXECUTORS = ("local", "ray")


@dataclass
class RunOptions:
    out: Path | None = None  # default: the spec's outpath, else out/<spec name> under the CWD
    overrides: dict[str, str] = field(default_factory=dict)  # --set key=value
    backend: str | None = None  # default: the spec's `backend:`, else diffusers
    models_dir: str | None = None  # default: $GRIDGEN_MODELS_DIR, else the spec's models_dir
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    strict: bool = False
    overwrite: bool = False
    compile: bool = False
    channels_last: bool = False
    cpu_shards: int = 0  # 0: one per intra-op thread; 1: off
    executor: str = "local"  # "local" (this process) or "ray" (one worker per GPU of a Ray cluster)
    ray_address: str | None = None  # "auto" or HOST:PORT of a running cluster; default: start a local one
    gpus_per_worker: float = 1.0  # GPUs each ray worker holds (0: CPU workers)
    workers: int | None = None  # ray workers to start (default: one per GPU, or one per 2 CPUs)
    limits: Limits = DEFAULT_LIMITS  # caps on values per axis and cells per grid


@dataclass
class Prepared:
    plan: Plan
    warnings: list[Problem]
    out_dir: Path
    models_dir: Path | None = None


def _models_dir(options: RunOptions, spec_dir: Path, from_spec: str | None) -> Path | None:
    if options.models_dir:
        return Path(options.models_dir)
    if os.environ.get("GRIDGEN_MODELS_DIR"):
        return Path(os.environ["GRIDGEN_MODELS_DIR"])
    if from_spec:
        return Path(from_spec) if Path(from_spec).is_absolute() else spec_dir / from_spec
    return None


def peek_backend(spec_path: Path) -> str:
    """The `backend:` a spec asks for, read before validation (validation needs the backend)."""
    from gridgen.spec.yamlnodes import read_yaml

    root = read_yaml(spec_path)
    grid = root.get("grid") if root.kind == "map" else None
    node = grid.get("backend") if grid is not None and grid.kind == "map" else None
    if node is None or node.kind != "scalar" or not node.value:
        return "diffusers"
    if str(node.value) not in available_backends():
        names = ", ".join(available_backends())
        raise SpecError([Problem(f"unknown backend {node.value!r}; use one of: {names}", node.location)])
    return str(node.value)


def refuse_over_caps(spec_path: Path, options: RunOptions) -> None:
    """Raise the spec's cap problems (too many values, cells, aliases), found with gridgen's own params
    before the backend, and the libraries it imports, load; other problems wait for the full check."""
    try:
        load_spec(spec_path, overrides=options.overrides, limits=options.limits)
    except SpecError as err:
        over = [problem for problem in err.problems if isinstance(problem, OverCap)]
        if over:
            raise SpecError(over) from None


def prepare(spec_path: Path, options: RunOptions) -> Prepared:
    """Load, plan and validate; raises SpecError listing every problem found, before any model loads."""
    spec_path = Path(spec_path)
    refuse_over_caps(spec_path, options)
    registry = P.Registry()
    context = BackendContext(spec_dir=spec_path.parent.resolve(), device=options.device, dtype=options.dtype,
                             max_batch=options.batch_size, compile=options.compile,
                             channels_last=options.channels_last, cpu_shards=options.cpu_shards)
    backend = load_backend(options.backend or peek_backend(spec_path), context)
    for extra in backend.extra_params():
        registry.add(extra)
    spec = load_spec(spec_path, overrides=options.overrides, registry=registry,
                     supported=backend.supported_params(), strict=options.strict, limits=options.limits)
    context.models_dir = _models_dir(options, spec.folder, spec.meta.models_dir)
    out_dir = Path(options.out) if options.out else (
        spec.folder / spec.meta.outpath if spec.meta.outpath else Path("out") / spec_path.stem)
    context.out_dir = out_dir
    seed = None if options.overwrite else previous_random_seed(out_dir)
    plan = make_plan(spec, backend, registry, seed if seed is not None else random.randrange(2**32))
    problems = list(spec.warnings) + plan.validate()
    if options.strict:
        problems = [Problem(f"{p.message} (an error because of --strict)", p.location)
                    if p.severity == "warning" else p for p in problems]
    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    return Prepared(plan, problems, out_dir, context.models_dir)


def execute(prepared: Prepared, options: RunOptions, show_progress: bool = True,
            stop: threading.Event | None = None):
    """Render every cell not yet on disk; `stop` (or Ctrl-C) ends the run after the batch(es) in flight."""
    if options.executor not in EXECUTORS:
        raise GridError(f"unknown executor {options.executor!r}; use one of {', '.join(EXECUTORS)}")
    store = Store(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed, overwrite=options.overwrite,
                  models_dir=prepared.models_dir)
    changed = store.forget_changed(prepared.plan.cells())
    if changed:
        print(f"note: {changed}", file=sys.stderr)
    try:
        if options.executor == "ray":
            from gridgen.executors.ray_executor import run_ray

            return run_ray(prepared.plan, store, options, address=options.ray_address,
                           gpus_per_worker=options.gpus_per_worker, workers=options.workers,
                           show_progress=show_progress, stop=stop)
        from gridgen.executors.local import run_local

        return run_local(prepared.plan, store, max_batch=options.batch_size, show_progress=show_progress, stop=stop)
    finally:
        prepared.plan.backend.close()
