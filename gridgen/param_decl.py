"""The `Param` record: what declaring one parameter says (name, type, range, default, help, who reads it).

It lives apart from the registry (`gridgen.params`), which imports the diffusers backend's name tables to check
choices, so that the backend interface (`gridgen.backends.base`) can hand `Param` to third-party backends without
importing the registry back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str  # canonical snake_case name
    kind: str  # int, float, str, bool, seed, choice, path, model
    default: Any = None
    help: str = ""
    aliases: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    # For kind "choice": maps user text to the canonical choice, or None when it matches nothing (or raises
    # ValueError with a message of its own, such as a did-you-mean).
    choose: Callable[[str], str | None] | None = None
    choices_help: str = ""
    # Who reads it: `plan` (applied while planning), `text` or `base` (the base image), `post` (a stage after it)
    # or `output` (the saved file). A backend derives from this which params a base image depends on.
    stage: str = "base"
    # Values from the base params and from every axis add up instead of replacing each other.
    accumulate: bool = False
    # Parses values that may be mappings or lists (sam_prompt) into their canonical text; raises ValueError.
    parse: Callable[[Any], str] | None = None
