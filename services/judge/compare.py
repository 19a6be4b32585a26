"""Output comparison for the judge: one rule set per data set, each that of the data set's reference harness.

``values_equal(actual, expected, rule)`` compares a ``call`` case's return value (a real Python value decoded
from the sandbox) with the expected value (from JSON); ``stdio_equal(actual, expected, rule)`` compares a
program's stdout with the expected text. ``rule`` is the test spec's ``compare`` field:

- ``default``: the judge's own rule (CodeIO, hand-written tasks): numbers within ``1e-6`` relative /
  ``1e-9`` absolute (integers exact), tuples equal lists, dict keys compared as JSON strings; stdout equal
  token by token.
- ``apps``: APPS ``eval/testing_util.py`` (``run_test``, ``custom_compare_``): call results by Python
  ``==`` (no float tolerance), tuple results as lists, ``output == expected`` or ``output == expected[0]``
  (APPS stores each expected result wrapped in a list), top-level dict keys converted to ``int``; stdout
  equal as stripped text, or line by line and token by token with APPS's ``np.allclose`` and
  rounded-to-3-decimals tolerances (in order: APPS's own last checks compare sets of lines, which we do not).
- ``codecontests``: ``OutputsMatch``/``ValuesMatch`` of deepmind/code_contests
  ``execution/tester_sandboxer.cc``: tokens split on ``" \\n\\t\\r\\v"``, ASCII-lowercased, numeric
  tokens within ``1e-5`` absolute.
- ``exact``: identical text; values of identical types (a tuple is not a list, ``1.0`` is not ``1``).

Under every rule, and wherever a reference harness says otherwise (docs/judge.md lists each difference):
only ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``,
``set`` and ``frozenset`` (exact types, no subclasses) can be equal to anything, and values are compared
structurally here, never through a type's own ``__eq__``; ``bool`` equals only ``bool`` (``True`` is not
``1``); ``bytes`` is not ``str``; a set is not a list; a complex number equals only a complex number; a
dict is never a number; a string is never a number; and an expected integer (a JSON integer, or an integer
token in expected stdout) is matched only by a value exactly equal to it (``3.0`` matches ``3``;
``123456900.0`` does not match ``123456789``): tolerances apply to expected real numbers only.

Values nested deeper than :data:`MAX_DEPTH` are unequal (no recursion limit is ever reached).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Literal, get_args

Rule = Literal["default", "apps", "codecontests", "exact"]
RULES: tuple[str, ...] = get_args(Rule)

REL_TOL = 1e-6  # default rule, call values
ABS_TOL = 1e-9
STDIO_TOL = 1e-6  # default rule, stdio tokens: absolute, or relative to |expected| when above 1
APPS_RTOL, APPS_ATOL = 1e-5, 1e-8  # numpy.allclose defaults, as APPS calls it
APPS_ROUND = 3  # APPS: round(float(t), 3) set comparison
CC_TOL = 1e-5  # code_contests ValuesMatch kDoublePrecision (strict <)
MAX_DEPTH = 200

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DEC = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# absl::SimpleAtod (a '+' is stripped, then absl::from_chars in general format): decimal or inf/nan
_CC_NUM = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan(?:\([A-Za-z0-9_]*\))?)",
    re.ASCII | re.IGNORECASE,
)
_CC_SPLIT = re.compile(r"[ \n\t\r\v]+")  # absl::ByAnyChar(" \n\t\r\v"), SkipEmpty
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_KNOWN = (*_ATOMS, list, tuple, dict, set, frozenset)


class _Unknown(Exception):
    """A value of a type no rule compares (never equal to anything)."""


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown comparison rule {rule!r}; choose one of {', '.join(RULES)}")


# --- keys: hashable values as plain tagged tuples, so sets and dict keys never use a foreign __eq__ ------


def _num_key(x: int | float) -> tuple[Any, ...]:
    """Python's numeric equality (``1 == 1.0``), without ``bool`` and with ``nan`` equal to itself."""
    if type(x) is float:
        if math.isnan(x):
            return ("nan",)
        if math.isinf(x):
            return ("inf", x > 0)
    return ("num", Fraction(x))


def _key(x: Any, exact: bool, depth: int = 0) -> tuple[Any, ...]:
    """A tagged key for a hashable value: equal keys iff equal values under the rule (no tolerance)."""
    if depth > MAX_DEPTH:
        raise _Unknown("too deep")
    t = type(x)
    if x is None:
        return ("none",)
    if t is bool:
        return ("bool", x)
    if t is int or t is float:
        return (t.__name__, _num_key(x)) if exact else _num_key(x)
    if t is complex:
        return ("complex", _num_key(x.real), _num_key(x.imag))
    if t is str or t is bytes:
        return (t.__name__, x)
    if t is tuple:
        return ("tuple", tuple(_key(v, exact, depth + 1) for v in x))
    if t is frozenset:
        return ("frozenset" if exact else "set", frozenset(_key(v, exact, depth + 1) for v in x))
    raise _Unknown(t.__name__)


def _json_key(x: Any) -> tuple[Any, ...]:
    """How ``json.dumps`` writes a dict key (``1`` -> ``"1"``, ``True`` -> ``"true"``); other keys as is."""
    t = type(x)
    if t is str:
        return ("s", x)
    if t is bool:
        return ("s", "true" if x else "false")
    if x is None:
        return ("s", "null")
    if t is int:
        return ("s", str(x))
    if t is float:
        if math.isnan(x):
            return ("s", "NaN")
        if math.isinf(x):
            return ("s", "Infinity" if x > 0 else "-Infinity")
        return ("s", repr(x))
    return ("k", _key(x, exact=False))


def _keyed(d: dict[Any, Any], key: Any) -> dict[Any, Any] | None:
    out = {key(k): v for k, v in d.items()}
    return out if len(out) == len(d) else None  # two keys that a JSON round trip would merge


def _dicts_equal(a: dict[Any, Any], e: dict[Any, Any], key: Any, eq: Any, depth: int) -> bool:
    if len(a) != len(e):
        return False
    ka, ke = _keyed(a, key), _keyed(e, key)
    if ka is None or ke is None or ka.keys() != ke.keys():
        return False
    return all(eq(ka[k], ke[k], depth + 1) for k in ke)


def _sets_equal(a: Any, e: Any, exact: bool) -> bool:
    return {_key(v, exact) for v in a} == {_key(v, exact) for v in e}


# --- numbers ------------------------------------------------------------------------------------------


def _close(a: float, e: float, rel: float, abs_: float) -> bool:
    if math.isnan(a) or math.isnan(e):
        return math.isnan(a) and math.isnan(e)
    if math.isinf(a) or math.isinf(e):
        return a == e
    return math.isclose(a, e, rel_tol=rel, abs_tol=abs_)


def _default_numbers(a: int | float, e: int | float) -> bool:
    if type(e) is int:  # an expected integer: only an exactly equal value
        return (type(a) is int or math.isfinite(a)) and a == e
    if type(a) is int:
        try:
            a = float(a)
        except OverflowError:
            return False
    return _close(a, e, REL_TOL, ABS_TOL)


# --- call values ---------------------------------------------------------------------------------------


def _eq_default(a: Any, e: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    ta, te = type(a), type(e)
    if ta not in _KNOWN or te not in _KNOWN:
        return False
    if a is None or e is None:
        return a is None and e is None
    if ta is bool or te is bool:
        return ta is te and a == e
    if ta in (int, float) and te in (int, float):
        return _default_numbers(a, e)
    if ta is complex or te is complex:
        return (
            ta is te and _close(a.real, e.real, REL_TOL, ABS_TOL) and _close(a.imag, e.imag, REL_TOL, ABS_TOL)
        )
    if ta in (str, bytes) or te in (str, bytes):
        return ta is te and a == e
    if ta in (list, tuple) and te in (list, tuple):
        return len(a) == len(e) and all(_eq_default(x, y, depth + 1) for x, y in zip(a, e, strict=True))
    if ta in (set, frozenset) and te in (set, frozenset):
        return _sets_equal(a, e, exact=False)
    if ta is dict and te is dict:
        return _dicts_equal(a, e, _json_key, _eq_default, depth)
    return False


def _eq_exact(a: Any, e: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    ta = type(a)
    if ta is not type(e) or ta not in _KNOWN:
        return False
    if ta is float or ta is complex:
        return _key(a, exact=True) == _key(e, exact=True)  # nan equals nan; otherwise ==
    if ta in _ATOMS:
        return bool(a == e)
    if ta is list or ta is tuple:
        return len(a) == len(e) and all(_eq_exact(x, y, depth + 1) for x, y in zip(a, e, strict=True))
    if ta is set or ta is frozenset:
        return _sets_equal(a, e, exact=True)
    return _dicts_equal(a, e, lambda k: _key(k, exact=True), _eq_exact, depth)


def _eq_apps(a: Any, e: Any, depth: int = 0) -> bool:
    """Python ``==`` on plain values, except: bool only equals bool, complex only complex, an expected int
    only an exactly equal number, ``nan`` never equal (as ``==``), tuples equal lists at every depth."""
    if depth > MAX_DEPTH:
        return False
    ta, te = type(a), type(e)
    if ta not in _KNOWN or te not in _KNOWN:
        return False
    if a is None or e is None:
        return a is None and e is None
    if ta is bool or te is bool or ta is complex or te is complex:
        return ta is te and bool(a == e)
    if ta in (int, float) and te in (int, float):
        return bool(a == e)  # Python compares int and float exactly; nan != nan
    if ta in (str, bytes) or te in (str, bytes):
        return ta is te and a == e
    if ta in (list, tuple) and te in (list, tuple):
        return len(a) == len(e) and all(_eq_apps(x, y, depth + 1) for x, y in zip(a, e, strict=True))
    if ta in (set, frozenset) and te in (set, frozenset):
        return _sets_equal(a, e, exact=False)
    if ta is dict and te is dict:
        return _dicts_equal(a, e, lambda k: _key(k, exact=False), _eq_apps, depth)
    return False


def _int_keys(d: dict[Any, Any]) -> dict[Any, Any] | None:
    try:
        return {int(k): v for k, v in d.items()}
    except (TypeError, ValueError):
        return None


def apps_expected(expected: Any) -> Any:
    """APPS ``run_test``'s rewrite of a stored call output: a dict (or a dict wrapped in a list) gets its
    keys converted to ``int`` when all convert, and is then wrapped in a list."""
    if type(expected) is dict and (d := _int_keys(expected)) is not None:
        expected = [d]
    if (
        type(expected) is list
        and expected
        and type(expected[0]) is dict
        and (d := _int_keys(expected[0])) is not None
    ):
        expected = [d]
    return expected


def _values_apps(actual: Any, expected: Any) -> bool:
    expected = apps_expected(expected)
    if type(actual) is tuple:  # "ground truth sequences are not tuples"
        actual = list(actual)
    if _eq_apps(actual, expected):
        return True
    return type(expected) is list and len(expected) > 0 and _eq_apps(actual, expected[0])


def values_equal(actual: Any, expected: Any, rule: str = "default") -> bool:
    """Equality of a returned value with an expected value under ``rule`` (see the module docstring)."""
    _check_rule(rule)
    try:
        if rule == "apps":
            return _values_apps(actual, expected)
        if rule == "exact":
            return _eq_exact(actual, expected)
        return _eq_default(actual, expected)  # codecontests has no call tests: the default rule
    except (_Unknown, RecursionError, TypeError, ValueError, OverflowError):
        return False


# --- stdout --------------------------------------------------------------------------------------------


def _exact_number(a: str, e: str) -> bool:
    """``a`` is a decimal literal of exactly the value of the integer literal ``e``."""
    if not _DEC.fullmatch(a):
        return False
    try:
        return Decimal(a) == Decimal(e)
    except InvalidOperation:
        return False


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


def _default_token(a: str, e: str) -> bool:
    if a == e:
        return True
    if _INT.fullmatch(e):
        return _exact_number(a, e)
    if not (_DEC.fullmatch(a) and _DEC.fullmatch(e)):
        return False
    fa, fe = float(a), float(e)
    if not (math.isfinite(fa) and math.isfinite(fe)):
        return False
    return abs(fa - fe) <= STDIO_TOL * max(1.0, abs(fe))


def _stdio_default(actual: str, expected: str) -> bool:
    if actual == expected or _lines(actual) == _lines(expected):
        return True
    a_tokens, e_tokens = actual.split(), expected.split()
    if a_tokens == e_tokens:
        return True
    if len(a_tokens) != len(e_tokens):
        return False
    return all(_default_token(a, e) for a, e in zip(a_tokens, e_tokens, strict=True))


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _apps_token(a: str, e: str, single: bool) -> bool:
    if a == e:
        return True
    if _INT.fullmatch(e):
        return _exact_number(a, e)
    fa, fe = float(a), float(e)
    if round(fa, APPS_ROUND) == round(fe, APPS_ROUND):
        return True
    return single and math.isfinite(fe) and abs(fa - fe) <= APPS_ATOL + APPS_RTOL * abs(fe)


def _stdio_apps(actual: str, expected: str) -> bool:
    out = actual.splitlines()
    want = expected.strip()
    # custom_compare_: the output's lines joined, or joined after stripping each, equal the expected text
    if "\n".join(out).strip() == want or "\n".join(o.strip() for o in out).strip() == want:
        return True
    a = [line.split() for line in out if line.strip()]
    e = [line.split() for line in expected.splitlines() if line.strip()]
    if len(a) != len(e) or any(len(x) != len(y) for x, y in zip(a, e, strict=True)):
        return False
    a_tokens = [t for line in a for t in line]
    e_tokens = [t for line in e for t in line]
    if a_tokens == e_tokens:
        return True
    if not all(_is_float(t) for t in a_tokens + e_tokens):
        return False  # APPS compares non-numeric output as text only
    single = all(len(line) == 1 for line in e)  # every line one number: APPS's np.allclose branch
    return all(_apps_token(x, y, single) for x, y in zip(a_tokens, e_tokens, strict=True))


def _cc_tokens(text: str) -> list[str]:
    return [t.translate(_ASCII_LOWER) for t in _CC_SPLIT.split(text) if t]


def _cc_number(token: str) -> float | None:
    if not _CC_NUM.fullmatch(token):
        return None
    if token[0] == "+" and token[1:2] == "-":
        return None
    return float(re.sub(r"\(.*\)$", "", token))


def _cc_token(a: str, e: str) -> bool:
    if a == e:
        return True
    fa, fe = _cc_number(a), _cc_number(e)
    if fa is None or fe is None:
        return False
    if _INT.fullmatch(e):
        return _exact_number(a, e)
    return abs(fa - fe) < CC_TOL


def _stdio_codecontests(actual: str, expected: str) -> bool:
    a, e = _cc_tokens(actual), _cc_tokens(expected)
    if a == e:
        return True
    if len(a) != len(e):
        return False
    return all(_cc_token(x, y) for x, y in zip(a, e, strict=True))


def stdio_equal(actual: str, expected: str, rule: str = "default") -> bool:
    """A program's stdout against the expected output under ``rule`` (see the module docstring)."""
    _check_rule(rule)
    if type(actual) is not str or type(expected) is not str:
        return False
    if rule == "exact":
        return actual == expected
    if rule == "apps":
        return _stdio_apps(actual, expected)
    if rule == "codecontests":
        return _stdio_codecontests(actual, expected)
    return _stdio_default(actual, expected)
