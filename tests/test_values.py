"""The one-line value list syntax: splitting, numeric fills and A1111 ranges."""

import pytest

from gridgen.spec.values import expand_numbers, split_list


def test_split_on_commas_or_double_pipes():
    assert split_list("a, b ,c") == ["a", "b", "c"]
    assert split_list("a, b || c, d ||") == ["a, b", "c, d"]


@pytest.mark.parametrize(("text", "integer", "expected"), [
    ("1, 2, ..., 6", True, [1, 2, 3, 4, 5, 6]),
    ("10, 8, ..., 2", True, [10, 8, 6, 4, 2]),
    ("7.0, 7.5, ..., 9.0", False, [7.0, 7.5, 8.0, 8.5, 9.0]),
    ("0.1, 0.2, ..., 0.5", False, [0.1, 0.2, 0.3, 0.4, 0.5]),
    ("1-5", True, [1, 2, 3, 4, 5]),
    ("1-9 (+2)", True, [1, 3, 5, 7, 9]),
    ("10-1 (-3)", True, [10, 7, 4, 1]),
    ("0-1 [5]", False, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("1-10 (+4)", True, [1, 5, 9]),
    ("-1, 3, 5", True, [-1, 3, 5]),
    ("2, 5-7, 20", True, [2, 5, 6, 7, 20]),
    # Infinity Grid's fill: steps stop short of an end that is not on the step, then the end closes the list.
    ("1, 3, ..., 10", True, [1, 3, 5, 7, 10]),
    ("1, 4, ..., 5", True, [1, 4, 5]),
])
def test_numeric_expansion(text, integer, expected):
    assert expand_numbers(split_list(text), integer) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("1-5 (-1)", "never reaches its end"),
    ("5-1 (+1)", "never reaches its end"),
    ("3, 3, ..., 9", "never reaches its end"),
    ("5, 4, ..., 9", "never reaches its end"),
    ("1, ..., 9", "two values before it"),
    ("1, 2, ...", "two values before it"),
    ("cat", "is not a whole number"),
    ("1.5", "not a whole number"),
    ("0-3 [0]", "at least 1"),
])
def test_bad_lists_say_what_is_wrong(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        expand_numbers(split_list(text), integer=True)
