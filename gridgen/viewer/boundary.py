"""The files a browser-submitted spec can make a run read, beyond its path- and model-valued params.

`gridgen serve --allow-runs` lets anyone with the token queue a spec, so the root (and the viewer's
models folder) is the boundary for every file a run opens. Params of kind path or model are checked
in `specs`; this module finds the paths hidden elsewhere, so the same check covers them:
- choice params whose value may name a file or folder: `upscaler` (a model file, `sd-x4:<folder>`,
  `hires:<file>`), `inpainter` (`lama:<file>`, an SD inpainting model), `outpaint_fill` (`lama:<file>`),
  `ella` (a checkpoint, or `on`, which names the official file);
- A1111 `<lora:name:weight>` tags in the prompts, which become `lora` values;
- the spec's own `models_dir:`, which moves where bare names, wildcards and networks are found;
- wildcard files (`__name__` in a prompt, and the wildcards their lines name) and embeddings a
  prompt names, read from the `wildcards/` and `embeddings/` folders, whose entries may be links to
  anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gridgen.backends.sd.images import outpaint
from gridgen.backends.sd.stages.segment_params import parse_inpainter
from gridgen.backends.sd.stages.upscalers import parse_upscaler
from gridgen.errors import Location, Problem
from gridgen.spec.model import GridSpec

_LORA_TAG = re.compile(r"<lora:([^>]+)>", re.IGNORECASE)
_WILDCARD = re.compile(r"__([\w\-./ ]+?)__")
_PROMPTS = ("prompt", "negative_prompt")
ELLA_OFFICIAL_FILE = "ella-sd1.5-tsc-t5xl.safetensors"
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt")

# (param, kind, value): a path the run reads, checked as `specs.path_problem` checks a param of that kind.
Request = tuple[str, str, str]
# Whether a path resolves under one of the allowed folders (`specs._under`, links followed).
Under = Callable[[Path, list[Path]], bool]


def hidden_paths(name: str, value: Any) -> Iterator[Request]:
    """The paths that param `name` set to `value` makes a run read, when its kind does not say so."""
    text = str(value).strip()
    if name == "upscaler":
        try:
            parsed = parse_upscaler(text)
        except ValueError:
            return
        for part in (parsed, parsed.inner):
            if part is not None and part.family == "model":
                yield "upscaler", "path", part.name
            elif part is not None and part.family == "sd-x4":
                yield "upscaler", "model", part.name
    elif name == "inpainter":
        try:
            parsed = parse_inpainter(text)
        except ValueError:
            return
        if parsed.family != "telea":
            yield "inpainter", "path" if parsed.family == "lama" else "model", parsed.name
    elif name == "outpaint_fill":
        try:
            chosen = outpaint.canonical_fill(text)
        except ValueError:
            return
        if chosen.startswith(outpaint.LAMA):  # the whole value: the backend's `locate` finds its file
            yield "outpaint_fill", "path", chosen
    elif name == "ella" and text.lower() != "off":
        yield "ella", "path", ELLA_OFFICIAL_FILE if text.lower() == "on" else text
    elif name in _PROMPTS:
        for tag in _LORA_TAG.findall(text):
            yield "lora", "path", tag


def candidates(value: str, spec_dir: Path, models_dir: Path | None) -> list[Path]:
    """Where a hidden path is looked for, in order: as written (absolute, or relative to the spec's folder),
    then in the models folder, bare or with a weights suffix."""
    raw = Path(value).expanduser()
    if raw.is_absolute():
        return [raw]
    found = [Path(spec_dir) / raw]
    if models_dir is not None:
        found += [Path(models_dir) / raw, *(Path(models_dir) / f"{raw}{suffix}" for suffix in _WEIGHT_SUFFIXES)]
    return found


def models_dir_problem(spec: GridSpec, allowed: list[Path], under: Under) -> Problem | None:
    """A spec's `models_dir:` must lie under the root or the viewer's models folder."""
    chosen = spec.meta.models_dir
    if not chosen:
        return None
    folder = Path(chosen).expanduser()
    folder = folder if folder.is_absolute() else spec.folder / folder
    if under(folder, allowed):
        return None
    return Problem(f"models_dir {chosen!r} is not a folder under the root or the viewer's models folder; a spec "
                   "sent from the browser finds its models there (leave models_dir out)", _grid_location(spec))


def wildcard_problems(spec: GridSpec, folders: list[Path], allowed: list[Path], under: Under) -> list[Problem]:
    """Every wildcard file the prompts can reach (nested ones included) must resolve under `allowed`."""
    problems: list[Problem] = []
    layers = [(spec.base_params, spec.base_locations)]
    layers += [(value.params, value.param_locations) for axis in spec.axes for value in axis.values]
    seen: set[str] = set()
    for params, locations in layers:
        for field in _PROMPTS:
            pending = [str(params.get(field) or "")]
            while pending:
                for match in _WILDCARD.finditer(pending.pop()):
                    wildcard = match.group(1).strip()
                    if wildcard in seen:
                        continue
                    seen.add(wildcard)
                    found = next((folder / f"{wildcard}.txt" for folder in folders
                                  if (folder / f"{wildcard}.txt").is_file()), None)
                    if found is None:
                        continue  # validation reports a missing wildcard file
                    if not under(found, allowed):
                        problems.append(Problem(f"wildcard __{wildcard}__ reads {found}, which leads outside the root "
                                                "and the models folder", locations.get(field)))
                        continue
                    pending.extend(_read_lines(found))
    return problems


def embedding_problems(spec: GridSpec, offered: dict[str, Path], allowed: list[Path], under: Under) -> list[Problem]:
    """Embeddings a prompt names are read from the embeddings folders, whose entries may link anywhere:
    each one `offered` (by name) that a prompt of the spec names must resolve under `allowed`."""
    outside = {name: path for name, path in offered.items() if not under(path, allowed)}
    problems: list[Problem] = []
    layers = [(spec.base_params, spec.base_locations)]
    layers += [(value.params, value.param_locations) for axis in spec.axes for value in axis.values]
    for params, locations in layers:
        for field in _PROMPTS:
            text = str(params.get(field) or "")
            for name in [name for name in outside if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.I)]:
                problems.append(Problem(f"embedding '{name}' is {outside.pop(name)}, which leads outside the root and "
                                        "the models folder", locations.get(field)))
    return problems


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[:10_000]
    except OSError:
        return []


def _grid_location(spec: GridSpec) -> Location:
    return Location(spec.path, 1, 1)
