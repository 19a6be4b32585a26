"""Unit tests of the output comparison rules (pure functions, no sandbox), per rule name.

The reference behaviour each rule follows is in docs/judge.md ("Comparison rules"); the differential tests
(test_differential.py) check the same rules against ports of the reference harnesses.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.judge.compare import MAX_DEPTH, RULES, apps_expected, stdio_equal, values_equal

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
letter_keys = st.text(alphabet="abc", min_size=1, max_size=3)
json_values_letter_keys = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(letter_keys, inner, max_size=3),
    max_leaves=12,
)


class Liar:
    """Equal to everything, by its own ``__eq__``."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


class LyingInt(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class LyingStr(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


# --- under every rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_hostile_values_never_equal(rule: str) -> None:
    assert not values_equal(b"abc", "abc", rule) and not values_equal(b"abc", ["abc"], rule)
    assert not values_equal({1, 2}, [1, 2], rule) and not values_equal(frozenset({1, 2}), [1, 2], rule)
    assert not values_equal({1, 2}, [[1, 2]], rule)
    assert not values_equal(complex(1.0, 2.0), [1.0, 2.0], rule) and not values_equal(
        1 + 2j, [[1.0, 2.0]], rule
    )
    assert not values_equal(complex(3, 0), 3, rule) and not values_equal(complex(3, 0), [3], rule)
    assert not values_equal({"__float__": "3"}, 3, rule) and not values_equal({"__float__": "3"}, 3.0, rule)
    assert not values_equal({"__float__": "3"}, [3], rule)
    assert not values_equal(True, 1, rule) and not values_equal(1, True, rule)
    assert not values_equal(False, 0, rule) and not values_equal(0, False, rule)
    assert not values_equal(True, [1], rule) and not values_equal(1, [True], rule)
    assert (
        not values_equal("1", 1, rule) and not values_equal(1, "1", rule) and not values_equal("1", [1], rule)
    )
    assert (
        not values_equal(None, 0, rule)
        and not values_equal(0, None, rule)
        and not values_equal([], None, rule)
    )
    assert not values_equal(123456900.0, 123456789, rule) and not values_equal(3.0000001, 3, rule)
    assert not values_equal(Fraction(1, 2), 0.5, rule)  # not a type any rule compares


@pytest.mark.parametrize("rule", RULES)
def test_program_defined_eq_is_never_called(rule: str) -> None:
    for liar in (Liar(), LyingInt(4), LyingStr("x")):
        for expected in (3, "abc", [1], {"a": 1}, None, True, 2.5):
            assert not values_equal(liar, expected, rule)
            assert not values_equal([liar], [expected], rule)
            assert not values_equal({"k": liar}, {"k": expected}, rule)
    assert not values_equal({Liar()}, {1}, rule) and not values_equal({(1, Liar())}, {(1, 2)}, rule)
    assert not values_equal({LyingStr("a"): 1}, {"b": 1}, rule)


@pytest.mark.parametrize("rule", RULES)
def test_hostile_stdio(rule: str) -> None:
    assert not stdio_equal("123456900.0", "123456789", rule)
    assert not stdio_equal("123456900.0\n", "123456789\n", rule)
    assert not stdio_equal("12345678901234567891", "12345678901234567890", rule)  # integers compare exactly
    assert not stdio_equal("", "0", rule) and not stdio_equal("1 2", "1 2 3", rule)
    assert not stdio_equal(b"3", "3", rule)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", RULES)
def test_deep_values_are_unequal_not_a_crash(rule: str) -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH * 50):
        deep = [deep]
    assert not values_equal(deep, deep, rule)
    nested: Any = 0
    for _ in range(MAX_DEPTH // 2):
        nested = [nested]
    assert values_equal(nested, nested, rule)


def test_unknown_rule() -> None:
    with pytest.raises(ValueError):
        values_equal(1, 1, "lenient")
    with pytest.raises(ValueError):
        stdio_equal("1", "1", "lenient")


@given(json_values)
def test_reflexive_on_json_values(v: object) -> None:
    for rule in ("default", "codecontests", "exact"):
        assert values_equal(v, v, rule)


@given(json_values_letter_keys)
def test_apps_reflexive_on_json_values(v: object) -> None:
    # APPS rewrites an expected dict, or a list starting with one, whose keys all convert to int (an empty
    # one too): that value is then not equal to itself, there as here
    assume(apps_expected(v) is v)
    assert values_equal(v, v, "apps")


@given(st.text(max_size=40))
def test_stdio_reflexive(text: str) -> None:
    for rule in RULES:
        assert stdio_equal(text, text, rule)


# --- default (CodeIO, hand-written call and stdio tasks) ------------------------------------------


def test_default_numbers() -> None:
    assert values_equal(3, 3) and not values_equal(3, 4)
    assert values_equal(0.1 + 0.2, 0.3)
    assert values_equal(1.0, 1) and values_equal(1, 1.0000000001)  # expected real: tolerance
    assert not values_equal(1.0000000001, 1)  # expected integer: exactly equal only
    assert not values_equal(1.0, 1.001)
    assert values_equal(math.nan, math.nan) and values_equal(math.inf, math.inf)
    assert not values_equal(math.inf, -math.inf) and not values_equal(math.inf, 10**400)
    assert values_equal(10**30, 10**30) and not values_equal(10**30, 10**30 + 1)
    assert not values_equal(10**400, 1e300) and not values_equal(float(10**20), 10**20 + 1)
    assert values_equal(complex(1, 2), complex(1, 2.0000000001)) and not values_equal(
        complex(1, 2), complex(2, 1)
    )


def test_default_structures() -> None:
    assert values_equal((1, 2), [1, 2]) and values_equal([(1, "a")], [[1, "a"]])
    assert not values_equal([1, 2], [1, 2, 3]) and not values_equal([1, 2], [2, 1])
    assert values_equal({"a": [1.0]}, {"a": [1]})
    assert values_equal({1: 2}, {"1": 2})  # JSON object keys are strings
    assert values_equal(
        {True: 1, None: 2, 1.5: 3}, {"true": 1, "null": 2, "1.5": 3}
    )  # as json.dumps writes them
    assert not values_equal({1: "a", "1": "a"}, {"1": "a"}) and not values_equal({1: 2}, {"2": 2})
    assert not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal([1], 1)
    assert (
        values_equal({1, 2}, {2, 1}) and values_equal(frozenset({1}), {1}) and not values_equal({1}, {True})
    )
    assert values_equal(b"ab", b"ab") and not values_equal(b"ab", b"ba")
    assert values_equal({(1, "a"): [1]}, {(1, "a"): [1.0]}) and not values_equal({(1, 2): 0}, {"(1, 2)": 0})


def test_default_stdio_whitespace_and_lines() -> None:
    assert stdio_equal("3\n", "3")
    assert stdio_equal("1 2\n3 4\n", "1 2 3 4")
    assert stdio_equal("  a   b  \n\n", "a b\n")
    assert stdio_equal("a\r\nb\r\n", "a\nb\n")
    assert not stdio_equal("YES", "yes")


def test_default_stdio_numbers() -> None:
    assert stdio_equal("0.3333333", "0.333333")
    assert stdio_equal("1e-7", "0.0")  # expected real: 1e-6 absolute
    assert not stdio_equal("1e-7", "0")  # expected integer: exactly equal only
    assert stdio_equal("3.0", "3") and stdio_equal("3e0", "3") and not stdio_equal("3.000001", "3")
    assert not stdio_equal("0.34", "0.33")
    assert stdio_equal("007", "7") and stdio_equal("-0", "0")
    assert not stdio_equal("nan", "0") and not stdio_equal("inf", "1e400") and stdio_equal("nan", "nan")
    assert stdio_equal("1234567.8901", "1234567.89") and not stdio_equal("1234569", "1234567.0")


@given(st.lists(st.text(alphabet="ab1. ", max_size=6), max_size=5))
def test_default_stdio_spacing_insensitive(tokens: list[str]) -> None:
    text = "\n".join(tokens)
    assert stdio_equal(" ".join(text.split()), text)


# --- apps (APPS eval/testing_util.py) -------------------------------------------------------------


def test_apps_values_wrapping_and_tuples() -> None:
    assert (
        values_equal(6, [6], "apps") and values_equal([6], [6], "apps") and not values_equal(7, [6], "apps")
    )
    assert values_equal(6, 6, "apps")  # an unwrapped expected value
    assert values_equal((1, 2), [[1, 2]], "apps") and values_equal([1, 2], [[1, 2]], "apps")
    assert values_equal([(0, 1), (1, 2)], [[[0, 1], [1, 2]]], "apps")  # APPS's list-of-tuples variant
    assert values_equal(((0, 1),), [[[0, 1]]], "apps")
    assert values_equal([[(0, 0)]], [[[[0, 0]]]], "apps")  # deliberate: tuples are lists at every depth
    assert not values_equal([1, 2], [[2, 1]], "apps") and not values_equal({1, 2}, [[1, 2]], "apps")
    # faithful to APPS: with an unwrapped list as expected, its first element is accepted too
    assert values_equal(1, [1, 2], "apps")


def test_apps_values_python_equality() -> None:
    assert values_equal(6.0, [6], "apps") and values_equal(6, [6.0], "apps")
    assert not values_equal(0.1 + 0.2, [0.3], "apps")  # no float tolerance in APPS
    assert values_equal(0.1 + 0.2, [0.30000000000000004], "apps")
    assert not values_equal(math.nan, [math.nan], "apps")  # nan == nan is False
    assert not values_equal(10**20 + 1, [1e20], "apps")  # Python compares int and float exactly
    assert values_equal("abc", ["abc"], "apps") and not values_equal("abc", ["ABC"], "apps")
    assert values_equal(None, [None], "apps") and values_equal(True, [True], "apps")


def test_apps_values_dict_keys() -> None:
    assert apps_expected([{"0": "a", "1": "b"}]) == [{0: "a", 1: "b"}]
    assert apps_expected({"0": "a"}) == [{0: "a"}] and apps_expected({"a": 1}) == {"a": 1}
    assert values_equal({0: "a", 1: "b"}, [{"0": "a", "1": "b"}], "apps")
    assert not values_equal({"0": "a", "1": "b"}, [{"0": "a", "1": "b"}], "apps")  # keys became int
    assert values_equal({0: "a"}, {"0": "a"}, "apps")
    assert values_equal({"a": 1}, [{"a": 1}], "apps") and values_equal({"a": 1}, {"a": 1}, "apps")
    assert not values_equal({True: "a"}, [{"1": "a"}], "apps")
    assert values_equal({"x": {"1": 2}}, [{"x": {"1": 2}}], "apps")  # nested dicts keep string keys
    assert not values_equal({"x": {1: 2}}, [{"x": {"1": 2}}], "apps")


def test_apps_stdio_text_and_lines() -> None:
    assert stdio_equal("3\n", "3", "apps") and stdio_equal("   cba", "cba\n", "apps")
    assert stdio_equal("  1   2  \n\n3 4\n\n", "1 2\n3 4", "apps")
    assert stdio_equal("a\r\nb\r\n", "a\nb\n", "apps")
    assert not stdio_equal("1 2 3 4", "1 2\n3 4", "apps")  # APPS keeps the line structure
    assert not stdio_equal("yes", "YES", "apps")
    # deliberate: order and repetitions count (APPS compares sets of per-line token sets)
    assert not stdio_equal("2 1", "1 2", "apps") and not stdio_equal("3 4\n1 2", "1 2\n3 4", "apps")
    assert not stdio_equal("YES\nNO", "YES\nYES\nNO", "apps")


def test_apps_stdio_numbers() -> None:
    assert stdio_equal("0.3333333\n", "0.333333333\n", "apps")  # np.allclose (rtol 1e-5, atol 1e-8)
    assert stdio_equal("0.333\n", "0.333333333\n", "apps")  # round(x, 3) equal
    assert stdio_equal("0.333 0.667", "0.3333 0.6667", "apps")  # round(x, 3) on every line
    assert stdio_equal("0.33334 0.5", "0.33336 0.5", "apps") and not stdio_equal(
        "0.3334 0.5", "0.3336 0.5", "apps"
    )
    assert not stdio_equal("0.34\n", "0.333\n", "apps")
    assert stdio_equal("1000.004\n", "1000.006\n", "apps")  # np.allclose: every line a single number
    assert not stdio_equal("1000.004 1\n", "1000.006 1\n", "apps")  # not so: only round(x, 3)
    assert not stdio_equal("1.000001\n2.000001", "1\n2.0", "apps")  # 1 is an integer: exact
    assert stdio_equal("3.0", "3", "apps") and not stdio_equal("3.00001", "3", "apps")
    assert not stdio_equal("3.0004", "3", "apps")
    assert stdio_equal("inf", "Infinity", "apps") and not stdio_equal("nan", "NaN", "apps")
    # mixed text and numbers: APPS compares them as text only
    assert not stdio_equal("Case #1: 0.5", "Case #1: 0.500000", "apps")
    assert stdio_equal("Case #1:  0.500000", "Case #1: 0.500000", "apps")


# --- codecontests (deepmind/code_contests OutputsMatch) ------------------------------------------


def test_codecontests_tokens() -> None:
    assert stdio_equal("yes\r\n", "YES", "codecontests") and stdio_equal("No", "NO\n", "codecontests")
    assert stdio_equal("1\n2\n3", "1 2 3", "codecontests") and stdio_equal(
        "1\t2\v3\r", "1 2 3", "codecontests"
    )
    assert not stdio_equal("1\f2", "1 2", "codecontests")  # \f is not a separator there
    assert not stdio_equal("été", "ÉTÉ", "codecontests")  # ASCII lowercasing only
    assert not stdio_equal("3 2 1", "1 2 3", "codecontests") and not stdio_equal(
        "1 2", "1 2 2", "codecontests"
    )


def test_codecontests_numbers() -> None:
    assert stdio_equal("0.333333", "0.3333333333", "codecontests")
    assert not stdio_equal("0.3333", "0.33333333", "codecontests")  # 1e-5 absolute
    assert not stdio_equal("0.00001", "0.0", "codecontests")  # strictly less than 1e-5
    assert stdio_equal("123456789.12346", "123456789.123456", "codecontests")  # absolute, not relative
    assert not stdio_equal("3.000001", "3", "codecontests")  # deliberate: an integer token is exact
    assert stdio_equal("3.0", "3", "codecontests") and stdio_equal("+3", "3", "codecontests")
    assert stdio_equal("-0", "0", "codecontests") and stdio_equal("1e2", "100", "codecontests")
    assert stdio_equal("inf 1.0", "inf 1", "codecontests")  # deliberate: identical tokens are equal
    assert not stdio_equal("inf", "1e400", "codecontests") and stdio_equal("nan", "nan", "codecontests")
    assert not stdio_equal("0x10", "16", "codecontests")


def test_codecontests_values_are_the_default_rule() -> None:
    for actual, expected in [((1, 2), [1, 2]), ({1: 2}, {"1": 2}), (0.1 + 0.2, 0.3), (3.0000001, 3)]:
        assert values_equal(actual, expected, "codecontests") == values_equal(actual, expected)


# --- exact ------------------------------------------------------------------------------------------


def test_exact_values() -> None:
    assert values_equal([1, "a", None, True], [1, "a", None, True], "exact")
    assert not values_equal((1, 2), [1, 2], "exact") and not values_equal(1.0, 1, "exact")
    assert not values_equal(0.1 + 0.2, 0.3, "exact") and values_equal(math.nan, math.nan, "exact")
    assert not values_equal({1: 2}, {"1": 2}, "exact") and values_equal({"a": [1]}, {"a": [1]}, "exact")
    assert values_equal({1, 2}, {2, 1}, "exact") and not values_equal(frozenset({1}), {1}, "exact")
    assert not values_equal({1.0}, {1}, "exact") and values_equal(b"x", b"x", "exact")


def test_exact_stdio() -> None:
    assert stdio_equal("3\n", "3\n", "exact")
    assert not stdio_equal("3\n", "3", "exact") and not stdio_equal("3 ", "3", "exact")
    assert not stdio_equal("3.0", "3", "exact")
