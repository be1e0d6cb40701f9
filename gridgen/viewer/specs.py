"""Owns the checks on a grid spec submitted through the browser, before it is queued and again
before it runs: a run name that stays inside the root, includes and model/image paths that lie
under the root or the models folder, and everything `runner.prepare` checks.

The spec is written to a hidden file in the root for the check (so relative paths resolve against
the root, as for a spec saved there) and removed afterwards. Problems come back as the CLI prints
them, `FILE:LINE:COL: message`, with the file shown under the name the user gave it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridgen.backends.base import Backend
from gridgen.backends.sd.adapters import embeddings
from gridgen.errors import GridError, Location, Problem, SpecError
from gridgen.resources import data_dir
from gridgen.runner import Opened, Prepared, RunOptions, open_spec, plan_spec, refuse_over_caps
from gridgen.spec.limits import OverCap
from gridgen.spec.yamlnodes import Node, read_yaml
from gridgen.tiny import TINY_MODEL_NAME, tiny_folder
from gridgen.viewer import boundary

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MAX_INCLUDE_DEPTH = 10


class SubmissionError(Exception):
    """The spec cannot run; `problems` are lines to show the user. `too_large`: it asks for more than a cap
    allows (values, cells, aliases, bytes), which the API answers with 413."""

    def __init__(self, problems: list[str], too_large: bool = False):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.too_large = too_large


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


def path_problem(backend: Backend, name: str, kind: str, value: str, allowed: list[Path]) -> str | None:
    """Why `value` of a path-valued param may not be used by a browser-submitted spec, or None. The backend
    says where `render` would read it (its own search, loading nothing); the embedded models are always allowed."""
    if kind == "model" and tiny_folder(value) is not None:
        return None
    not_found = (f"{name} {value!r} is not found under the root or the models folder; a spec sent from the browser "
                 f"may only use models and images there (or the embedded {TINY_MODEL_NAME}), not Hugging Face ids")
    try:
        found = backend.locate(name, value)
    except GridError:
        return not_found
    if found is None:  # the value reads no file (such as `vae: auto`)
        return None
    if not Path(found).exists():
        return not_found
    if _under(Path(found), allowed):
        return None
    return (f"{name} {value!r} is {Path(found).resolve()}, outside the root and the models folder; a spec sent "
            "from the browser may only use models and images there")


def _hidden_problem(opened: Opened, name: str, kind: str, value: str, allowed: list[Path]) -> str | None:
    """`path_problem` for a path hidden in another param's value (see `boundary`). A `<lora:...>` tag is found
    and an outpaint fill's `lama:<file>` are found by the backend's own `locate`; the others (upscaler and
    inpainter files, ELLA checkpoints) are params the backend does not locate, so their files are looked for where
    the upscaler and inpainter loaders look."""
    if name in ("lora", "outpaint_fill"):
        return path_problem(opened.backend, name, kind, value, allowed)
    if kind == "model" and (tiny_folder(value) is not None or value.lower() == "auto"):
        return None
    for candidate in boundary.candidates(value, opened.context.spec_dir, opened.context.models_dir):
        if candidate.exists():
            if _under(candidate, allowed):
                return None
            return (f"{name} {value!r} is {candidate.resolve()}, outside the root and the models folder; a spec "
                    "sent from the browser may only use models and images there")
    return (f"{name} {value!r} is not found under the root or the models folder; a spec sent from the browser may "
            f"only use models and images there (or the embedded {TINY_MODEL_NAME}), not Hugging Face ids")


def _params_problems(opened: Opened, options: RunOptions, allowed: list[Path]) -> list[Problem]:
    """Every path-valued param the spec sets, and every path hidden in another param's value (see
    `boundary`): the grid's params and each axis value. gridgen's own defaults are not the sender's
    choice (the embedded models, ELLA's usual T5 id) and are not checked."""
    spec, models_dir = opened.spec, opened.context.models_dir
    kinds = {param.name: param.kind for param in opened.registry if param.kind in ("path", "model")}
    layers: list[tuple[dict[str, Any], dict[str, Location]]] = [(spec.base_params, spec.base_locations)]
    layers += [(value.params, value.param_locations) for axis in spec.axes for value in axis.values]
    problems, seen = [], set()
    for params, locations in layers:
        for name, values in params.items():
            for value in values if isinstance(values, list) else [values]:  # accumulating params hold lists
                if value is None:
                    continue
                direct = [(name, kinds[name], str(value).strip())] if name in kinds else []
                hidden = list(boundary.hidden_paths(name, value))
                for param, kind, wanted in direct + hidden:
                    if (param, wanted) in seen:
                        continue
                    seen.add((param, wanted))
                    if (param, kind, wanted) in direct:
                        reason = path_problem(opened.backend, param, kind, wanted, allowed)
                    else:
                        reason = _hidden_problem(opened, param, kind, wanted, allowed)
                    if reason:
                        problems.append(Problem(reason, locations.get(name)))
    folders = [spec.folder / "wildcards", *([models_dir / "wildcards"] if models_dir else [])]
    problems += boundary.wildcard_problems(spec, folders, allowed, _under)
    offered = embeddings.available(embeddings.folders(spec.folder, models_dir))
    problems += boundary.embedding_problems(spec, offered, allowed, _under)
    if options.models_dir is None:  # the viewer's models folder, when it has one, replaces the spec's
        problems += [p for p in [boundary.models_dir_problem(spec, allowed, _under)] if p]
    return problems


# ---- the whole check ------------------------------------------------------------------------------


def _shown(problem: Problem, temp: Path, filename: str) -> str:
    location = problem.location
    if location is not None and location.file is not None and Path(location.file) == temp:
        location = Location(Path(filename), location.line, location.col)
    return str(Problem(problem.message.replace(str(temp), filename), location, problem.severity))


def write_temp(text: str, root: Path) -> Path:
    """The spec written to a hidden file in `root`, where its relative paths resolve; raises SubmissionError."""
    temp = root.resolve() / f".gridgen-spec-{uuid.uuid4().hex}.yaml"
    try:
        temp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise SubmissionError([f"cannot write the spec under the root to check it: {err.strerror or err}"]) from None
    return temp


def check(text: str, filename: str, name: str, root: Path, models_dir: Path | None) -> Checked:
    """Validate a browser-submitted spec that renders to `root/name`; raises SubmissionError.

    On success the caller owns `prepared` (execute it, or close its backend)."""
    temp = write_temp(text, root)
    try:
        return check_file(temp, filename, name, root, models_dir)
    finally:
        temp.unlink(missing_ok=True)


def check_file(temp: Path, filename: str, name: str, root: Path, models_dir: Path | None) -> Checked:
    """`check` of a spec already written by `write_temp`; the caller removes the file."""
    root = root.resolve()
    allowed = [root] + ([models_dir.resolve()] if models_dir else [])
    options = RunOptions(out=root / name, models_dir=str(models_dir) if models_dir else None)

    def refuse(problems: list[Problem]) -> SubmissionError:
        return SubmissionError([_shown(p, temp, filename) for p in problems],
                               too_large=any(isinstance(p, OverCap) for p in problems))

    try:
        problems = _include_problems(read_yaml(temp), root, allowed + [data_dir("axes").resolve()])
        if problems:
            raise refuse(problems)
        refuse_over_caps(temp, options)  # before the backend and its libraries load
        # Validation reads model configs, which must not happen for a path outside: paths are checked first.
        opened = open_spec(temp, options)
        problems = _params_problems(opened, options, allowed)
        if problems:
            opened.backend.close()
            raise refuse(opened.spec.problems + problems)
        prepared = plan_spec(opened, options)
    except SpecError as err:
        raise refuse(err.problems) from None
    except GridError as err:
        raise SubmissionError([str(err).replace(str(temp), filename)]) from None
    return Checked(prepared, options, [_shown(p, temp, filename) for p in prepared.warnings])
