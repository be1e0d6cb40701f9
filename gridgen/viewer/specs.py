"""Owns the checks on a grid spec submitted through the browser, before it is queued and again
before it runs: a run name that stays inside the root, includes and model/image paths that lie
under the root or the models folder, and everything `runner.prepare` checks.

The spec is written to a hidden file in the root for the check (so relative paths resolve against
the root, as for a spec saved there) and removed afterwards. Problems come back as the CLI prints
them, `FILE:LINE:COL: message`, with the file shown under the name the user gave it.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridgen import params as P
from gridgen.backends import load_backend
from gridgen.backends.base import BackendContext
from gridgen.backends.sd.adapters import embeddings, lora
from gridgen.errors import GridError, Location, Problem, SpecError
from gridgen.resources import data_dir
from gridgen.runner import Prepared, RunOptions, peek_backend, prepare
from gridgen.spec import load_spec
from gridgen.spec.model import GridSpec
from gridgen.spec.yamlnodes import Node, read_yaml
from gridgen.tiny import TINY_MODEL_NAME, tiny_folder

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Where the diffusers backend looks inside a models folder, per param (A1111's layout).
MODEL_SUBFOLDERS = {"model": "Stable-diffusion", "vae": "VAE"}
MAX_INCLUDE_DEPTH = 10


class SubmissionError(Exception):
    """The spec cannot run; `problems` are lines to show the user."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Checked:
    prepared: Prepared
    options: RunOptions
    warnings: list[str]


def run_name(name: str | None, filename: str | None) -> str:
    """The output folder name: the one given, else a slug of the file name; raises SubmissionError."""
    given = (name or "").strip()
    if not given:
        stem = Path(filename or "").stem
        given = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "grid"
    if not NAME.match(given):
        raise SubmissionError([f"run name {given!r}: use letters, digits, '.', '_' and '-' (at most 80), "
                               "starting with a letter or digit"])
    return given


def _under(path: Path, roots: list[Path]) -> bool:
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return any(real == root or root in real.parents for root in roots)


# ---- includes -----------------------------------------------------------------------------------


def _include_candidates(name: str, base: Path) -> list[Path]:
    """The files `include: name` may read, in the loader's order (gridgen/spec/loader.py)."""
    relative = Path(name)
    if relative.parts and relative.parts[0] == "axes":
        relative = Path(*relative.parts[1:])
    return [base / name, data_dir("axes") / relative]


def _include_problems(node: Node, base: Path, allowed: list[Path], depth: int = 0) -> list[Problem]:
    problems: list[Problem] = []
    if node.kind != "map" or depth > MAX_INCLUDE_DEPTH:
        return problems
    for key, _, value in node.entries:
        if key.strip().lower() != "include":
            continue
        for item in value.items if value.kind == "seq" else [value]:
            if item.kind != "scalar" or item.value is None or not str(item.value).strip():
                continue  # the loader reports it
            name = str(item.value).strip()
            found = next((c for c in _include_candidates(name, base) if c.is_file()), None)
            if found is None:
                continue  # the loader reports it, with where it looked
            if not _under(found, allowed):
                problems.append(Problem(f"include '{name}' lies outside the root and the models folder; a spec "
                                        "sent from the browser may only include files there or gridgen's axes/",
                                        item.location))
                continue
            try:
                included = read_yaml(found)
            except SpecError:
                continue  # the loader reports it
            problems += _include_problems(included, found.parent, allowed, depth + 1)
    return problems


# ---- model and image paths ----------------------------------------------------------------------


def _candidates(name: str, value: str, spec_dir: Path, models_dir: Path | None) -> list[Path]:
    """Where the backend looks for `value`, in its order (gridgen/backends/sd/models/locate.py)."""
    raw = Path(value).expanduser()
    if raw.is_absolute():
        return [raw]
    candidates = [spec_dir / raw]
    if models_dir is not None:
        roots = [models_dir] + ([models_dir / MODEL_SUBFOLDERS[name]] if name in MODEL_SUBFOLDERS else [])
        for root in roots:
            candidates += [root / raw, *(root / f"{raw}{suffix}" for suffix in SINGLE_FILE_SUFFIXES)]
    return candidates


def _network_file(name: str, value: str, spec_dir: Path, models_dir: Path | None) -> Path | None:
    """The file the backend finds for a `lora` or `embedding` value (they have folders of their own)."""
    try:
        if name == "lora":
            return lora.resolve(lora.parse(value).name, spec_dir, models_dir)
        return embeddings.resolve(value, spec_dir, embeddings.folders(spec_dir, models_dir))
    except GridError:
        return None


def path_problem(name: str, kind: str, value: str, spec_dir: Path, models_dir: Path | None,
                 allowed: list[Path]) -> str | None:
    """Why `value` of a path-valued param may not be used by a browser-submitted spec, or None."""
    if kind == "model" and (tiny_folder(value) is not None or value.lower() == "auto"):
        return None
    if name in ("lora", "embedding"):
        found = _network_file(name, value, spec_dir, models_dir)
        candidates = [found] if found else []
    else:
        candidates = _candidates(name, value, spec_dir, models_dir)
    for candidate in candidates:
        if candidate.exists():
            if _under(candidate, allowed):
                return None
            return (f"{name} {value!r} is {candidate.resolve()}, outside the root and the models folder; a spec "
                    "sent from the browser may only use models and images there")
    return (f"{name} {value!r} is not found under the root or the models folder; a spec sent from the browser may "
            f"only use models and images there (or the embedded {TINY_MODEL_NAME}); Hugging Face ids are not looked up")


def _loaded(temp: Path, options: RunOptions):
    """The spec parsed as `runner.prepare` parses it (same backend, same registry), before the backend
    validates anything: validation reads model configs, which must not happen for a path outside."""
    backend = load_backend(options.backend or peek_backend(temp), BackendContext(spec_dir=temp.parent))
    try:
        registry = P.Registry()
        for extra in backend.extra_params():
            registry.add(extra)
        spec = load_spec(temp, registry=registry, supported=backend.supported_params())
    finally:
        backend.close()
    return spec, registry


def _models_dir(spec: GridSpec, options: RunOptions) -> Path | None:
    """The models folder `runner.prepare` will use for this spec."""
    chosen = options.models_dir or os.environ.get("GRIDGEN_MODELS_DIR") or spec.meta.models_dir
    if not chosen:
        return None
    return Path(chosen) if Path(chosen).is_absolute() else spec.folder / chosen


def _params_problems(spec: GridSpec, registry: P.Registry, options: RunOptions, allowed: list[Path]) -> list[Problem]:
    """Every path-valued param the spec sets: the grid's params and each axis value. gridgen's own
    defaults are not the sender's choice (the embedded models, ELLA's usual T5 id) and are not checked."""
    kinds = {param.name: param.kind for param in registry if param.kind in ("path", "model")}
    models_dir = _models_dir(spec, options)
    layers: list[tuple[dict[str, Any], dict[str, Location]]] = [(spec.base_params, spec.base_locations)]
    layers += [(value.params, value.param_locations) for axis in spec.axes for value in axis.values]
    problems, seen = [], set()
    for params, locations in layers:
        for name, values in params.items():
            for value in values if isinstance(values, list) else [values]:  # accumulating params hold lists
                if name not in kinds or value is None or (name, str(value)) in seen:
                    continue
                seen.add((name, str(value)))
                reason = path_problem(name, kinds[name], str(value).strip(), spec.folder, models_dir, allowed)
                if reason:
                    problems.append(Problem(reason, locations.get(name)))
    return problems


# ---- the whole check ------------------------------------------------------------------------------


def _shown(problem: Problem, temp: Path, filename: str) -> str:
    location = problem.location
    if location is not None and location.file is not None and Path(location.file) == temp:
        location = Location(Path(filename), location.line, location.col)
    return str(Problem(problem.message.replace(str(temp), filename), location, problem.severity))


def check(text: str, filename: str, name: str, root: Path, models_dir: Path | None) -> Checked:
    """Validate a browser-submitted spec that renders to `root/name`; raises SubmissionError.

    On success the caller owns `prepared` (execute it, or close its backend)."""
    root = root.resolve()
    allowed = [root] + ([models_dir.resolve()] if models_dir else [])
    temp = root / f".gridgen-spec-{uuid.uuid4().hex}.yaml"
    options = RunOptions(out=root / name, models_dir=str(models_dir) if models_dir else None)
    try:
        temp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise SubmissionError([f"cannot write the spec under the root to check it: {err.strerror or err}"]) from None

    def refuse(problems: list[Problem]) -> SubmissionError:
        return SubmissionError([_shown(p, temp, filename) for p in problems])

    try:
        try:
            problems = _include_problems(read_yaml(temp), root, allowed + [data_dir("axes").resolve()])
            if problems:
                raise refuse(problems)
            spec, registry = _loaded(temp, options)
            problems = _params_problems(spec, registry, options, allowed)
            if problems:
                raise refuse(problems)
            prepared = prepare(temp, options)
        except SpecError as err:
            raise refuse(err.problems) from None
        except GridError as err:
            raise SubmissionError([str(err).replace(str(temp), filename)]) from None
        return Checked(prepared, options, [_shown(p, temp, filename) for p in prepared.warnings])
    finally:
        temp.unlink(missing_ok=True)
