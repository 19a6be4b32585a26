"""Unit tests of the output comparison rules (pure functions, no sandbox)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from services.judge.compare import stdio_equal, values_equal

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


def test_numbers() -> None:
    assert values_equal(3, 3) and not values_equal(3, 4)
    assert values_equal(0.1 + 0.2, 0.3)
    assert values_equal(1.0, 1) and values_equal(1, 1.0000000001)
    assert not values_equal(1.0, 1.001)
    assert values_equal(math.nan, math.nan) and values_equal(math.inf, math.inf)
    assert not values_equal(math.inf, -math.inf)
    assert values_equal(10**30, 10**30) and not values_equal(10**30, 10**30 + 1)


def test_bool_and_none_are_strict() -> None:
    assert values_equal(True, True) and not values_equal(True, 1) and not values_equal(0, False)
    assert values_equal(None, None) and not values_equal(None, 0) and not values_equal([], None)


def test_structures() -> None:
    assert values_equal((1, 2), [1, 2]) and values_equal([(1, "a")], [[1, "a"]])
    assert not values_equal([1, 2], [1, 2, 3]) and not values_equal([1, 2], [2, 1])
    assert values_equal({"a": [1.0]}, {"a": [1]})
    assert values_equal({1: 2}, {"1": 2})  # JSON object keys are strings
    assert not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal("1", 1) and not values_equal([1], 1)


@given(json_values)
def test_reflexive_on_json_values(v: object) -> None:
    assert values_equal(v, v)


def test_stdio_whitespace_and_lines() -> None:
    assert stdio_equal("3\n", "3")
    assert stdio_equal("1 2\n3 4\n", "1 2 3 4")
    assert stdio_equal("  a   b  \n\n", "a b\n")
    assert stdio_equal("a\r\nb\r\n", "a\nb\n")
    assert not stdio_equal("YES", "yes")
    assert not stdio_equal("1 2", "1 2 3")
    assert not stdio_equal("", "0")


def test_stdio_numbers() -> None:
    assert stdio_equal("0.3333333", "0.333333")
    assert stdio_equal("1e-7", "0")  # absolute tolerance 1e-6
    assert not stdio_equal("0.34", "0.33")
    assert stdio_equal("007", "7")
    assert not stdio_equal("12345678901234567890", "12345678901234567891")  # integers compare exactly
    assert not stdio_equal("nan", "0")


@given(st.lists(st.text(alphabet="ab1. ", max_size=6), max_size=5))
def test_stdio_reflexive_and_spacing_insensitive(tokens: list[str]) -> None:
    text = "\n".join(tokens)
    assert stdio_equal(text, text)
    assert stdio_equal(" ".join(text.split()), text)
