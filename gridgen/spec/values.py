"""The one-line value list syntax of an axis: `a, b, c`, `a || b`, fills and A1111 ranges.

- `a, b, c` splits on commas (A1111's CSV quoting keeps `"a, b"` one value); `a || b` splits on double
  pipes so values may contain commas. Empty items stay values (`prompt: ''` is one empty prompt).
- `1, 3, ..., 9` continues the step of the two values before the ellipsis and ends on the value after
  it, as Infinity Grid does: when the end is not on the step (`1, 3, ..., 10`), the steps stop short
  of it and the end itself still closes the list (1, 3, 5, 7, 10). Decimal fills are exact.
- A1111 ranges, for numeric params only: `1-5`, `1-9 (+2)`, `10-1 (-3)` and `0-1 [5]` (five evenly
  spaced values; on a whole-number param each is cut to its whole part, as A1111 does: 0, 0, 0, 0, 1).
Numbers are read the way Python's int()/float() read them (`1_000`, `1e3`) and computed exactly;
they come back as int or float. Where Infinity Grid or A1111 would expand a list differently (float
drift, A1111's ranges that stop before their end), a note says so; the loader turns it into a warning.
A range or fill that would pass the per-axis cap is refused from its count, before it is listed.
"""

from __future__ import annotations

import csv
import math
import re
from decimal import Decimal, InvalidOperation

from gridgen.spec.limits import DEFAULT_LIMITS, CapExceeded, Limits, values_over_cap

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(
    rf"^\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*"
    rf"(?:\(\s*(?P<step>{_NUMBER})\s*\)|\[\s*(?P<count>\d+)\s*\])?\s*$"
)
_ELLIPSIS = {"..", "...", "....", "…"}


def split_list(text: str) -> list[str]:
    """Split a one-line list on `||` when present (a trailing empty item dropped), else on commas."""
    text = str(text)
    if "||" in text:
        parts = [part.strip() for part in text.split("||")]
        return parts[:-1] if len(parts) > 1 and parts[-1] == "" else parts
    if '"' in text:
        # A1111 reads its value boxes as one CSV row: `"a, b", c` is two values.
        return [part.strip() for row in csv.reader([text], skipinitialspace=True) for part in row] or [""]
    return [part.strip() for part in text.split(",")]


def _number(text: str, integer: bool) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        kind = "whole number" if integer else "number"
        raise ValueError(f"{text!r} is not a {kind}, a range like 1-5, 1-9 (+2) or 0-1 [5], or an ellipsis") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    if not math.isfinite(float(value)):
        raise ValueError(f"{str(text)[:20]!r}... is too large a number")
    if integer and value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number")
    return value


def _out(value: Decimal, integer: bool) -> int | float:
    return int(value) if integer else float(value)


def _within_cap(count: int | float | Decimal, limits: Limits, what: str) -> None:
    # A step like 1e-9999 is exact in Decimal: clamp before the count becomes an int of that many digits.
    message = values_over_cap(math.ceil(min(count, 10**300)), limits, what)
    if message:
        raise CapExceeded(message)


def _shown(values: list[int | float]) -> str:
    return ", ".join(f"{value:g}" for value in values) or "no values"


def _a1111_range(match: re.Match, integer: bool, notes: list[str], limits: Limits) -> list[int | float]:
    start = _number(match["start"], integer)
    end = _number(match["end"], integer)
    text = match.group(0).strip()
    if match["count"] is not None:
        count = int(match["count"])
        _within_cap(count, limits, f"range {text!r}")
        if count < 1:
            raise ValueError(f"range {text!r} asks for {count} values; ask for at least 1")
        if count == 1:
            return [_out(start, integer)]
        points = [start + (end - start) * i / (count - 1) for i in range(count)]
        # A1111 cuts each point of a whole-number range to its whole part (int()), toward zero.
        return [int(point) if integer else float(point) for point in points]
    step = _number(match["step"], integer) if match["step"] is not None else Decimal(1 if end >= start else -1)
    if step == 0 or (end - start) * step < 0:
        raise ValueError(f"range {text!r} never reaches its end: a step of {step:+g} from {start:g} "
                         f"moves away from {end:g}")
    _within_cap((end - start) / step + 1, limits, f"range {text!r}")
    values = [_out(start + index * step, integer) for index in range(int((end - start) / step) + 1)]
    peer = _a1111_stepped(start, end, step, integer, match["step"] is not None)
    if peer is not None and len(peer) != len(values):
        notes.append(f"A1111's X/Y/Z plot expands {text!r} to {_shown(peer)}; gridgen takes every step from the "
                     f"start that does not pass the end: {_shown(values)}")
    return values


def _a1111_stepped(start: Decimal, end: Decimal, step: Decimal, integer: bool, signed: bool) -> list | None:
    """What A1111 makes of `a-b (+s)`: its end is exclusive past b for whole numbers, and its decimal
    ranges take one step more when the end is not on the step. None where A1111 does not read the text."""
    if integer:
        return list(range(int(start), int(end) + 1, int(step) if signed else 1))
    first, last, stride = float(start), float(end), float(step) if signed else 1.0
    count = max(0, math.ceil((last + stride - first) / stride))
    return [first + i * stride for i in range(count)]


def _fill(before: list[Decimal], after: Decimal, integer: bool, notes: list[str], limits: Limits) -> list[Decimal]:
    first, last = before[-2], before[-1]
    step = last - first
    if step == 0 or (after - last) * step < 0:
        raise ValueError(f"the fill {first:g}, {last:g}, ..., {after:g} never reaches its end: "
                         f"steps of {step:+g} move away from {after:g}")
    count = int((after - last) / step)
    _within_cap(len(before) + count, limits, f"the fill {first:g}, {last:g}, ..., {after:g}")
    filled = [last + i * step for i in range(1, count)]
    if not integer:
        # Infinity Grid computes the same count in floats, where 0.1 steps drift (0.7 - 0.2) / 0.1 = 4.99...
        peer_count = int((float(after) - float(last)) / (float(last) - float(first)))
        if peer_count != count:
            lost = len(filled) - max(peer_count - 1, 0)
            notes.append(f"Infinity Grid fills {first:g}, {last:g}, ..., {after:g} in floats and "
                         f"{'loses' if lost > 0 else 'adds'} {abs(lost)} value(s) to rounding; gridgen fills exactly")
    return filled


def expand_numbers(items: list[str], integer: bool, notes: list[str] | None = None,
                   limits: Limits = DEFAULT_LIMITS) -> list[int | float]:
    """Turn a split list into numbers, expanding fills and A1111 ranges; raises ValueError.

    `notes` collects how the peers (Infinity Grid, A1111) would expand the list differently. A range or
    fill that would pass the per-axis cap of `limits` raises CapExceeded (a ValueError) before it is listed.
    """
    notes = notes if notes is not None else []
    items = items[:-1] if len(items) > 1 and items[-1] == "" else items  # `1, 2,`: a trailing comma
    exact: list[Decimal] = []
    values: list[int | float] = []
    for position, item in enumerate(items):
        if item in _ELLIPSIS:
            if len(exact) < 2 or position + 1 >= len(items) or items[position + 1] in _ELLIPSIS:
                raise ValueError("an ellipsis needs two values before it and one after it, e.g. 1, 2, ..., 10")
            filled = _fill(exact, _number(items[position + 1], integer), integer, notes, limits)
            exact.extend(filled)
            values.extend(_out(value, integer) for value in filled)
            _within_cap(len(values), limits, "the list")
            continue
        match = _RANGE.match(item)
        if match is not None and not re.fullmatch(_NUMBER, item.strip()):
            expanded = _a1111_range(match, integer, notes, limits)
            exact.extend(Decimal(str(value)) for value in expanded)
            values.extend(expanded)
            _within_cap(len(values), limits, "the list")
            continue
        number = _number(item, integer)
        exact.append(number)
        values.append(_out(number, integer))
    return values
