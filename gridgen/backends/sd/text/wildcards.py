"""Wildcards: `__name__` in a prompt becomes one line of `wildcards/name.txt`, picked per cell.

The file is looked for in a `wildcards/` folder next to the spec, then in the models folder's
`wildcards/`; `name` may hold subfolders (`__colors/warm__`). Blank lines and lines starting with
`#` are ignored. The line is picked by a random generator seeded from the cell's seed, the wildcard's
name and how many times it has already appeared in that text, so a grid renders the same on every
run and the same wildcard twice in a prompt may pick two different lines. A picked line may name
other wildcards, which are expanded in turn.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

from gridgen.errors import GridError

WILDCARD = re.compile(r"__([\w\-./ ]+?)__")
MAX_DEPTH = 20  # nested wildcards deeper than this are taken for a cycle


class WildcardError(GridError):
    pass


def folders(spec_dir: Path, models_dir: Path | None) -> list[Path]:
    """Where wildcard files are looked for, first match wins."""
    return [spec_dir / "wildcards", *([models_dir / "wildcards"] if models_dir else [])]


def _file(name: str, where: list[Path]) -> Path:
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise WildcardError(f"wildcard __{name}__ must name a file inside a wildcards folder, without `..`")
    for folder in where:
        candidate = folder / f"{name}.txt"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(folder / f"{name}.txt") for folder in where)
    raise WildcardError(f"wildcard __{name}__ has no file: looked for {looked}; create it with one choice per line")


@lru_cache(maxsize=256)
def _lines(path: Path, modified: float) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WildcardError(f"cannot read wildcard file {path}: {exc}; save it as UTF-8 text") from exc
    lines = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not lines:
        raise WildcardError(f"wildcard file {path} has no choices; write one choice per line")
    return lines


def choices(name: str, where: list[Path]) -> tuple[str, ...]:
    """The lines a wildcard picks from; raises WildcardError naming the file or the folders searched."""
    path = _file(name, where)
    return _lines(path, path.stat().st_mtime)


def expand(text: str, seed: int, where: list[Path]) -> tuple[str, dict[str, list[str]]]:
    """`text` with every wildcard replaced, and the line each wildcard picked (in order of appearance)."""
    picked: dict[str, list[str]] = {}

    def substitute(current: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise WildcardError(f"wildcards nest more than {MAX_DEPTH} deep in {text!r}; does one name itself?")

        def pick(match: re.Match) -> str:
            name = match.group(1).strip()
            seen = picked.setdefault(name, [])
            rng = random.Random(f"{seed}:{name}:{len(seen)}")
            line = rng.choice(choices(name, where))
            seen.append(line)
            return substitute(line, depth + 1)

        return WILDCARD.sub(pick, current)

    return substitute(text, 0), picked


def problems(text: str, where: list[Path]) -> list[str]:
    """Every missing or unusable wildcard file `text` names (nested ones included, for any seed's picks)."""
    found: list[str] = []
    pending, seen = [text], set()
    while pending:
        for match in WILDCARD.finditer(pending.pop()):
            name = match.group(1).strip()
            if name in seen:
                continue
            seen.add(name)
            try:
                pending.extend(choices(name, where))
            except WildcardError as exc:
                found.append(str(exc))
    return found


def expand_params(params: dict, where: list[Path]) -> dict:
    """A cell's params with wildcards in its prompt and negative prompt replaced by their picks.

    When anything was replaced, `wildcards` records the picks as {field: {name: [lines]}}.
    """
    expanded, record = dict(params), {}
    for field in ("prompt", "negative_prompt"):
        text, picked = expand(str(params.get(field) or ""), int(params.get("seed") or 0), where)
        if picked:
            expanded[field], record[field] = text, picked
    if record:
        expanded["wildcards"] = record
    return expanded
