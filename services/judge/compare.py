"""Output comparison for the judge.

``values_equal(actual, expected)`` (``call`` tests; ``expected`` arrives as JSON):

- ``bool`` equals only ``bool`` (JSON ``true`` is not ``1``); ``None`` equals only ``None``;
- two ints compare exactly; when either side is a float, numbers are equal when
  ``math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)``; ``nan`` equals ``nan``, infinities equal by sign;
- lists and tuples are the same kind of thing (JSON has no tuples): equal when their lengths match and
  the items are pairwise ``values_equal``;
- dicts: the same keys (keys are compared as strings, as JSON does) and pairwise equal values;
- strings compare exactly; anything else falls back to ``==``.

``stdio_equal(actual, expected)`` (``stdio`` tests, what APPS's checker accepts):

1. identical text; or
2. the same lines after stripping each line and dropping leading/trailing blank lines; or
3. the same whitespace-separated tokens (so spacing and line breaks do not matter); or
4. the same number of tokens, each pair equal as text, or both integers with the same value, or both
   real numbers within ``1e-6`` absolute or relative error (``0.3333333`` matches ``0.333333``).
Letter case matters (``YES`` is not ``yes``).
"""

from __future__ import annotations

import math
import re
from typing import Any

REL_TOL = 1e-6
ABS_TOL = 1e-9
STDIO_TOL = 1e-6
_INT = re.compile(r"[+-]?\d+")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def values_equal(actual: Any, expected: Any) -> bool:
    """Equality of a returned value with an expected JSON value (rules in the module docstring)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is bool and type(expected) is bool and actual == expected
    if actual is None or expected is None:
        return actual is None and expected is None
    if _number(actual) and _number(expected):
        if isinstance(actual, int) and isinstance(expected, int):
            return actual == expected
        a, e = float(actual), float(expected)
        if math.isnan(a) or math.isnan(e):
            return math.isnan(a) and math.isnan(e)
        if math.isinf(a) or math.isinf(e):
            return a == e
        return math.isclose(a, e, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(
            values_equal(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        a_keys = {str(k): v for k, v in actual.items()}
        e_keys = {str(k): v for k, v in expected.items()}
        if a_keys.keys() != e_keys.keys():
            return False
        return all(values_equal(a_keys[k], e_keys[k]) for k in e_keys)
    if isinstance(actual, str) or isinstance(expected, str):
        return type(actual) is type(expected) and actual == expected
    try:
        return bool(actual == expected)
    except Exception:
        return False


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


def _token_equal(a: str, e: str) -> bool:
    if a == e:
        return True
    if _INT.fullmatch(a) and _INT.fullmatch(e):
        return int(a) == int(e)
    try:
        fa, fe = float(a), float(e)
    except ValueError:
        return False
    if math.isnan(fa) or math.isnan(fe) or math.isinf(fa) or math.isinf(fe):
        return False
    return abs(fa - fe) <= STDIO_TOL * max(1.0, abs(fe))


def stdio_equal(actual: str, expected: str) -> bool:
    """APPS-style comparison of a program's stdout with the expected output (rules in the docstring)."""
    if actual == expected:
        return True
    if _lines(actual) == _lines(expected):
        return True
    a_tokens, e_tokens = actual.split(), expected.split()
    if a_tokens == e_tokens:
        return True
    if len(a_tokens) != len(e_tokens):
        return False
    return all(_token_equal(a, e) for a, e in zip(a_tokens, e_tokens, strict=True))
