"""A1111's X/Y/Z plot range syntax, as its wiki and scripts/xyz_grid.py define it, as a table.

Each row is an A1111 value box, the param's kind and what A1111 expands it to (derived from its rules:
`a-b` counts up by one including b; `a-b (+s)` steps by a signed s; `a-b [n]` takes n evenly spaced
points, each cut to its whole part (toward zero) on a whole-number param; values are CSV, so quotes
keep commas). gridgen must give the same values. The second table lists the few ranges where A1111's
own result is a quirk gridgen does not copy, with what each tool gives; gridgen must print a note there.
"""

import pytest

from gridgen.spec.values import expand_numbers, split_list

AGREED = [
    ("1-5", True, [1, 2, 3, 4, 5]),
    ("1-9 (+2)", True, [1, 3, 5, 7, 9]),
    ("1-10 (+4)", True, [1, 5, 9]),
    ("1-10 [5]", True, [1, 3, 5, 7, 10]),  # A1111's wiki example
    ("0-1 [5]", True, [0, 0, 0, 0, 1]),
    ("0-1 [5]", False, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("0-10 [4]", True, [0, 3, 6, 10]),
    ("-10--1 [4]", True, [-10, -7, -4, -1]),
    ("5-5", True, [5]),
    ("3-7 [1]", True, [3]),
    ("1-3", False, [1.0, 2.0, 3.0]),
    ("0-1 (+0.25)", False, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("-5-5 (+5)", True, [-5, 0, 5]),
    ("1, 2-4, 10", True, [1, 2, 3, 4, 10]),
    ("7, 7, 8", True, [7, 7, 8]),
    ("1-2, 1-2", True, [1, 2, 1, 2]),
    ("1.5, 2.5", False, [1.5, 2.5]),
]

# (text, integer, what A1111 gives, what gridgen gives): A1111's end is exclusive past b for a negative
# step, a range counting down without a step is empty there, and a decimal step that does not land on the
# end overshoots it (numpy's arange).
DIFFERENT = [
    ("10-1 (-3)", True, [10, 7, 4], [10, 7, 4, 1]),
    ("5-1", True, [], [5, 4, 3, 2, 1]),
    ("0-1 (+0.3)", False, [0.0, 0.3, 0.6, 0.9, 1.2], [0.0, 0.3, 0.6, 0.9]),
]


@pytest.mark.parametrize(("text", "integer", "expected"), AGREED)
def test_a1111_ranges_expand_as_a1111_expands_them(text, integer, expected):
    notes = []
    assert expand_numbers(split_list(text), integer, notes) == expected
    assert notes == []


@pytest.mark.parametrize(("text", "integer", "a1111", "gridgen"), DIFFERENT)
def test_a1111_quirks_differ_with_a_note(text, integer, a1111, gridgen):
    notes = []
    assert expand_numbers(split_list(text), integer, notes) == gridgen
    (note,) = notes
    assert "A1111's X/Y/Z plot expands" in note
    shown = ", ".join(f"{value:g}" for value in a1111) or "no values"
    assert shown in note


def test_csv_quoting_keeps_commas():
    assert split_list('"a, b", c') == ["a, b", "c"]
    assert split_list('"a ""quoted"" word", b') == ['a "quoted" word', "b"]
