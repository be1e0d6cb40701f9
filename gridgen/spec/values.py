"""The one-line value list syntax of an axis: `a, b, c`, `a || b`, fills and A1111 ranges.

- `a, b, c` splits on commas; `a || b` splits on double pipes so values may contain commas.
- `1, 2, ..., 10` and `7.0, 7.5, ..., 9.0` continue the step of the two values before the
  ellipsis up to the value after it, which the fill must land on exactly.
- A1111 ranges, for numeric params only: `1-5`, `1-9 (+2)`, `10-1 (-3)` and `0-1 [5]` (five
  evenly spaced values).
Numbers come back as int or float; everything else as stripped text.
"""

from __future__ import annotations

import math
import re

from gridgen.spec.limits import DEFAULT_LIMITS, CapExceeded, Limits, values_over_cap

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(
    rf"^\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*"
    rf"(?:\(\s*(?P<step>{_NUMBER})\s*\)|\[\s*(?P<count>\d+)\s*\])?\s*$"
)
_ELLIPSIS = {"..", "...", "....", "…"}


def split_list(text: str) -> list[str]:
    """Split a one-line list on `||` when present, else on commas; a trailing empty item is dropped."""
    parts = [part.strip() for part in str(text).split("||" if "||" in str(text) else ",")]
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _number(text: str, integer: bool) -> int | float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]!r} is too large a number")
    if integer:
        if value != int(value):
            raise ValueError(f"{text!r} is not a whole number")
        return int(value)
    return value


def _tidy(value: float, integer: bool) -> int | float:
    # Repeated float addition drifts (7.499999...); values are compared and displayed as written.
    return int(round(value)) if integer else round(value, 10)


def _within_cap(count: int | float, limits: Limits, what: str) -> None:
    message = values_over_cap(math.ceil(count), limits, what)
    if message:
        raise CapExceeded(message)


def _a1111_range(match: re.Match, integer: bool, limits: Limits) -> list[int | float]:
    start = _number(match["start"], integer)
    end = _number(match["end"], integer)
    text = match.group(0).strip()
    if match["count"] is not None:
        count = int(match["count"])
        _within_cap(count, limits, f"range {text!r}")
        if count < 1:
            raise ValueError(f"range {text!r} asks for {count} values; ask for at least 1")
        if count == 1:
            return [start]
        if integer and (end - start) % (count - 1):
            raise ValueError(f"range {text!r} does not split into {count} whole numbers; use decimal values")
        return [_tidy(start + (end - start) * i / (count - 1), integer) for i in range(count)]
    step = _number(match["step"], integer) if match["step"] is not None else (1 if end >= start else -1)
    if step == 0 or (end - start) * step < 0:
        raise ValueError(f"range {text!r} never reaches its end: a step of {step:+g} from {start:g} "
                         f"moves away from {end:g}")
    _within_cap((end - start) / step + 1, limits, f"range {text!r}")
    values, index = [], 0
    while True:
        value = _tidy(start + index * step, integer)
        if (value - end) * step > 1e-9 * max(1.0, abs(end)):
            break
        values.append(value)
        index += 1
    return values


def _fill(before: list[int | float], after: int | float, integer: bool, limits: Limits) -> list[int | float]:
    first, last = before[-2], before[-1]
    step = last - first
    if step == 0 or (after - last) * step < 0:
        raise ValueError(f"the fill {first:g}, {last:g}, ..., {after:g} never reaches its end: "
                         f"steps of {step:+g} move away from {after:g}")
    count = (after - last) / step
    _within_cap(len(before) + count, limits, f"the fill {first:g}, {last:g}, ..., {after:g}")
    if abs(count - round(count)) > 1e-6:
        below = _tidy(last + int(count) * step, integer)
        raise ValueError(f"the fill {first:g}, {last:g}, ..., {after:g} never reaches its end: steps of "
                         f"{step:+g} land on {below:g} and then pass it; change the end or the step")
    return [_tidy(last + i * step, integer) for i in range(1, int(round(count)))]


def expand_numbers(items: list[str], integer: bool, limits: Limits = DEFAULT_LIMITS) -> list[int | float]:
    """Turn a split list into numbers, expanding fills and A1111 ranges; raises ValueError, also when a
    range or fill would pass the per-axis cap of `limits` (counted before anything is listed)."""
    values: list[int | float] = []
    for position, item in enumerate(items):
        if item in _ELLIPSIS:
            if len(values) < 2 or position + 1 >= len(items) or items[position + 1] in _ELLIPSIS:
                raise ValueError("an ellipsis needs two values before it and one after it, e.g. 1, 2, ..., 10")
            values.extend(_fill(values, _number(items[position + 1], integer), integer, limits))
            _within_cap(len(values), limits, "the list")
            continue
        if re.fullmatch(_NUMBER, item):
            values.append(_number(item, integer))
            continue
        match = _RANGE.match(item)
        if match is None:
            kind = "whole number" if integer else "number"
            raise ValueError(f"{item!r} is not a {kind}, a range like 1-5, 1-9 (+2) or 0-1 [5], or an ellipsis")
        values.extend(_a1111_range(match, integer, limits))
        _within_cap(len(values), limits, "the list")
    return values
