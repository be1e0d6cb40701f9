"""Parses A1111's prompt attention syntax into weighted text fragments, split at `BREAK`.

The grammar, as A1111's web UI reads it:

    (text)          the text's weight times 1.1; nests: ((text)) is 1.21
    [text]          the text's weight divided by 1.1
    (text:1.3)      the text's weight times 1.3 (any decimal number, signs allowed)
    \\( \\) \\[ \\] \\\\   a literal bracket or backslash; a backslash before any other character is kept
    BREAK           (upper case, a word of its own) ends the current 75-token chunk and starts a new one

Brackets left open at the end weigh the rest of the prompt as if closed there; a closing bracket with
no opener, and a `:number)` outside round brackets, are plain text. Extra-network tags (`<lora:...>`
and the like) are not text: A1111 takes them out before it parses a prompt, and so does `parse`.
Nothing here knows about tokens: `text.py` turns the fragments into weighted token chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gridgen import prompt_tags

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One lexical item per match, tried in order: escapes, an explicit weight closing a round bracket,
# the four brackets, then a run of ordinary text (a lone colon or backslash is ordinary text too).
_TOKEN = re.compile(r"""
    (?P<escape>\\[()\[\]\\])
  | (?P<weight>:\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))\s*\))
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+|[:\\])
""", re.VERBOSE)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_OPENER = {")": "(", "]": "["}


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float


def parse(prompt: str) -> list[list[Fragment]]:
    """The prompt as segments (split at BREAK) of fragments whose neighbours have different weights.

    A prompt without BREAK is one segment; an empty prompt is one empty segment.
    """
    prompt = prompt_tags.strip_extra_networks(prompt)[0]
    pieces: list[list] = []  # [text, weight] pairs, or None for a BREAK
    # Where each open bracket's content starts in `pieces`; round and square brackets nest independently.
    opened: dict[str, list[int]] = {"(": [], "[": []}
    factors = {"(": ROUND_MULTIPLIER, "[": SQUARE_MULTIPLIER}

    def weigh(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece is not None:
                piece[1] *= factor

    for match in _TOKEN.finditer(prompt):
        kind, token = match.lastgroup, match.group(0)
        if kind == "escape":
            pieces.append([token[1], 1.0])
        elif kind == "open":
            opened[token].append(len(pieces))
        elif kind == "weight" and opened["("]:
            weigh(opened["("].pop(), float(match.group("number")))
        elif kind == "close" and opened[_OPENER[token]]:
            weigh(opened[_OPENER[token]].pop(), factors[_OPENER[token]])
        else:
            for index, part in enumerate(_BREAK.split(token)):
                if index:
                    pieces.append(None)
                if part:
                    pieces.append([part, 1.0])
    for bracket, starts in opened.items():
        for start in starts:
            weigh(start, factors[bracket])
    return _segments(pieces)


def _segments(pieces: list) -> list[list[Fragment]]:
    segments: list[list[Fragment]] = [[]]
    for piece in pieces:
        if piece is None:
            segments.append([])
            continue
        text, weight = piece
        current = segments[-1]
        if current and current[-1].weight == weight:
            current[-1] = Fragment(current[-1].text + text, weight)
        else:
            current.append(Fragment(text, weight))
    return segments


def plain_text(prompt: str) -> str:
    """The prompt's words without any attention syntax (for finding embedding and wildcard names)."""
    return " ".join(fragment.text for segment in parse(prompt) for fragment in segment)
