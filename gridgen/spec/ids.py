"""Axis and value ids: readable slugs of what the user wrote, safe as file and folder names.

An id names a folder or file under `images/` and appears in URLs, so it must survive Windows, macOS
and Linux alike: lower case (two of them ignore case), letters and digits of every script kept
(`日本`, `кот`), everything else one underscore, no reserved device names, a bounded length. Ids
never collide inside their axis: where two values would still meet (`1, 1`; `Cat, cat`; `a b, a_b`)
the later ones get the smallest free `__2`, `__3` suffix. An id is its own slug (the suffix is kept
where everything else collapses), so a spec written back with ids as keys loads to the same ids.
The page shows the titles as written, not the ids.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

_LIMIT = 48
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_NEGATIVE_NUMBER = re.compile(r"-\s*\d")
_REPEAT_SUFFIX = re.compile(r"(.+?)(__\d+)")


def _kept(char: str) -> bool:
    if char.isascii():
        return char.isalnum()
    return unicodedata.category(char)[0] in "LNM"  # letters, digits and the marks some scripts write with


def slugify(text: Any) -> str:
    """The id of a key or title: `Euler a` -> `euler_a`, `-1` -> `minus_1`, `日本` -> `日本`."""
    written = unicodedata.normalize("NFKC", str(text)).strip()
    repeat = _REPEAT_SUFFIX.fullmatch(written)
    if repeat is not None:
        return slugify(repeat[1]) + repeat[2]
    folded = written.casefold()
    slug = re.sub(r"_+", "_", "".join(char if _kept(char) else "_" for char in folded)).strip("_") or "_"
    if _NEGATIVE_NUMBER.match(written):
        slug = f"minus_{slug}"  # `-1` and `1` are different seeds
    if slug in _WINDOWS_DEVICES:
        slug += "_"
    if len(slug) > _LIMIT:
        slug = f"{slug[:_LIMIT - 9].rstrip('_')}_{hashlib.sha1(written.encode()).hexdigest()[:8]}"
    return slug


def unique_ids(slugs: list[str]) -> list[str]:
    """`slugs` with each repeat made distinct by the smallest free `__N` suffix (N from 2), in order."""
    taken: set[str] = set()
    ids = []
    for slug in slugs:
        chosen, number = slug, 2
        while chosen in taken:
            chosen, number = f"{slug}__{number}", number + 1
        taken.add(chosen)
        ids.append(chosen)
    return ids
