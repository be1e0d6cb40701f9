"""One grid run from a spec file to a finished output folder: the steps the CLI, the viewer's
run queue and the executors share.

`prepare` reads the spec's grid settings, resolves the run's folders once, builds the backend with that
complete context, then loads, plans and validates the spec without loading a model; `execute` renders
what is not yet on disk through the chosen executor.
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
from gridgen.backends.base import Backend, BackendContext
from gridgen.errors import GridError, Problem, SpecError
from gridgen.plan import Plan, make_plan
from gridgen.spec import GridMeta, GridSpec, read_meta, read_spec
from gridgen.spec.limits import DEFAULT_LIMITS, Limits, OverCap
from gridgen.spec.report import in_file_order
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
    cache_bytes: int = 1 << 30  # in-memory budget of the stage cache; the rest spills to the output folder
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
    """A run ready to render: its plan (with the backend), the problems found, and the complete context
    the backend was built with, which executors hand on (Ray workers build their own backends from it)."""

    plan: Plan
    warnings: list[Problem]
    context: BackendContext

    @property
    def out_dir(self) -> Path:
        return self.context.out_dir


@dataclass
class Opened:
    """A spec loaded with its backend's params, the backend built with the run's complete context."""

    spec: GridSpec
    registry: P.Registry
    backend: Backend
    context: BackendContext


def models_dir(options: RunOptions, spec_dir: Path, meta: GridMeta) -> Path | None:
    """The run's models folder: --models-dir, else $GRIDGEN_MODELS_DIR, else the spec's `models_dir:`
    (relative to the spec's folder), else none."""
    chosen = options.models_dir or os.environ.get("GRIDGEN_MODELS_DIR") or meta.models_dir
    if not chosen:
        return None
    return Path(chosen) if Path(chosen).is_absolute() else spec_dir / chosen


def refuse_over_caps(spec_path: Path, options: RunOptions) -> None:
    """Raise the spec's cap problems (too many values, cells, aliases), found with gridgen's own params
    before the backend, and the libraries it imports, load; other problems wait for the full check."""
    try:
        spec = read_spec(spec_path, overrides=options.overrides, limits=options.limits)
    except SpecError:
        return  # not a grid at all: the full check says so
    over = [problem for problem in spec.problems if isinstance(problem, OverCap)]
    if over:
        raise SpecError(over)

def out_dir(options: RunOptions, spec_path: Path, meta: GridMeta) -> Path:
    """The run's output folder: --out, else the spec's `outpath:` (relative to its folder), else out/<spec name>."""
    if options.out:
        return Path(options.out)
    return spec_path.parent / meta.outpath if meta.outpath else Path("out") / spec_path.stem


def backend_context(spec_path: Path, options: RunOptions, meta: GridMeta) -> BackendContext:
    """Everything the backend is told about the run, resolved before it is built and never changed after."""
    return BackendContext(spec_dir=spec_path.parent.resolve(), out_dir=out_dir(options, spec_path, meta),
                          models_dir=models_dir(options, spec_path.parent, meta), device=options.device,
                          dtype=options.dtype, max_batch=options.batch_size, cache_bytes=options.cache_bytes,
                          compile=options.compile, channels_last=options.channels_last,
                          cpu_shards=options.cpu_shards)


def open_spec(spec_path: Path, options: RunOptions) -> Opened:
    """Read the spec's grid settings, build its backend with the complete context, then read the spec with
    the backend's params; its problems wait in `spec.problems` for `plan_spec`, which adds the backend's."""
    spec_path = Path(spec_path)
    meta = read_meta(spec_path)
    context = backend_context(spec_path, options, meta)
    name = options.backend or meta.backend or "diffusers"
    if not options.backend and name not in available_backends():
        raise _unknown_backend(spec_path, name)
    backend = load_backend(name, context)
    try:
        registry = P.Registry()
        extras = backend.extra_params()
        for extra in extras:
            registry.add(extra)
        supported = set(backend.supported_params()) | {extra.name for extra in extras}
        spec = read_spec(spec_path, overrides=options.overrides, registry=registry, supported=supported,
                         strict=options.strict, limits=options.limits)
    except BaseException:
        backend.close()
        raise
    return Opened(spec, registry, backend, context)


def plan_spec(opened: Opened, options: RunOptions) -> Prepared:
    """Plan and validate an opened spec: the spec's own problems and the backend's checks of every cell (models,
    input files, sizes) together, in file and line order; raises InvalidSpec holding all of them when any is an
    error (closing the backend). A grid over the caps is refused with its own problems, unplanned."""
    spec = opened.spec
    try:
        if any(isinstance(problem, OverCap) for problem in spec.problems):
            raise SpecError(in_file_order(spec.problems + spec.warnings, spec.path))
        seed = None if options.overwrite else previous_random_seed(opened.context.out_dir)
        plan = make_plan(spec, opened.backend, opened.registry, seed if seed is not None else random.randrange(2**32))
        problems = list(spec.problems) + list(spec.warnings) + plan.validate()
        if options.strict:
            problems = [Problem(f"{p.message} (an error because of --strict)", p.location)
                        if p.severity == "warning" else p for p in problems]
        problems = in_file_order(problems, spec.path)
        if any(p.severity == "error" for p in problems):
            raise InvalidSpec(problems, spec)
    except BaseException:
        opened.backend.close()
        raise
    return Prepared(plan, problems, opened.context)


class InvalidSpec(SpecError):
    """Every problem of a spec that was read but cannot run, with the spec as read (what was valid in it), so a
    report can still show its axes and cells."""

    def __init__(self, problems: list[Problem], spec: GridSpec):
        super().__init__(problems)
        self.spec = spec


def _unknown_backend(spec_path: Path, name: str) -> SpecError:
    """The spec's `backend:` names no installed backend: a problem located at that line."""
    from gridgen.spec.yamlnodes import read_yaml

    root = read_yaml(spec_path)
    grid = root.get("grid") if root.kind == "map" else None
    node = grid.get("backend") if grid is not None and grid.kind == "map" else None
    where = node.location if node is not None else None
    return SpecError([Problem(f"unknown backend {name!r}; use one of: {', '.join(available_backends())}", where)])


def prepare(spec_path: Path, options: RunOptions) -> Prepared:
    """Load, plan and validate; raises SpecError listing every problem found, before any model loads."""
    spec_path = Path(spec_path)
    refuse_over_caps(spec_path, options)
    return plan_spec(open_spec(spec_path, options), options)


def execute(prepared: Prepared, options: RunOptions, show_progress: bool = True,
            stop: threading.Event | None = None):
    """Render every cell not yet on disk; `stop` (or Ctrl-C) ends the run after the batch(es) in flight."""
    if options.executor not in EXECUTORS:
        raise GridError(f"unknown executor {options.executor!r}; use one of {', '.join(EXECUTORS)}")
    store = Store(prepared.out_dir, prepared.plan.spec, prepared.plan.random_seed, overwrite=options.overwrite,
                  models_dir=prepared.context.models_dir)
    changed = store.forget_changed(prepared.plan.cells())
    if changed:
        print(f"note: {changed}", file=sys.stderr)
    try:
        if options.executor == "ray":
            from gridgen.executors.ray_executor import run_ray

            return run_ray(prepared.plan, store, prepared.context, address=options.ray_address,
                           gpus_per_worker=options.gpus_per_worker, workers=options.workers,
                           show_progress=show_progress, stop=stop)
        from gridgen.executors.local import run_local

        return run_local(prepared.plan, store, max_batch=prepared.context.max_batch, show_progress=show_progress,
                         stop=stop)
    finally:
        prepared.plan.backend.close()
