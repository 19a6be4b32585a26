"""Issue 14's refusals as an extension of every service's schemathesis run: each generated case is also
sent with a boolean in place of each integer (a 4xx everywhere), with a NUL in each string (a 4xx where a
database stores the body), with a NUL in each path parameter (a 422), and each operation with a body gets
the unparsable bodies (``invalid_json``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import schemathesis

# free-form values (``Any``): an integer or a string there is data, not a count or a name
FREE_FORM = frozenset({"metadata", "judge", "args", "kwargs", "expected"})
UNPARSABLE = [b"[" * 100_000, b'{"n": ' + b"7" * 5000 + b"}", b'{"x": "\xff"}']


def _mutations(value: Any, *, strings: bool, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            if key not in FREE_FORM:
                yield from _mutations(sub, strings=strings, path=(*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value[:2]):
            yield from _mutations(sub, strings=strings, path=(*path, i))
    elif isinstance(value, int) and not isinstance(value, bool):
        yield path, True
    elif strings and isinstance(value, str):
        yield path, value + "\x00"


def _replace(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(body)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


def check_hostile_variants(case: schemathesis.Case, *, nul_refused: bool, limit: int = 6) -> None:
    """Send the variants of ``case``; each must be refused with a 4xx in the error envelope."""
    variants: list[tuple[str, schemathesis.Case]] = []
    if isinstance(case.body, (dict, list)):
        for path, new in list(_mutations(case.body, strings=nul_refused))[:limit]:
            variant = case.derive()
            variant.body = _replace(case.body, path, new)
            variants.append((f"body {'.'.join(map(str, path))} = {new!r}", variant))
    for name in list(case.path_parameters or {})[:2]:
        variant = case.derive()
        variant.path_parameters = {**(case.path_parameters or {}), name: "a\x00b"}
        variants.append((f"path {name} with NUL", variant))
    for what, variant in variants:
        response = variant.call()
        assert 400 <= response.status_code < 500, (what, case.method, case.path, response.status_code, response.text)
        assert isinstance(response.json()["error"]["type"], str)
        if what.startswith("path"):
            assert response.status_code == 422 and response.json()["error"]["param"] == "path", response.text


def check_unparsable_bodies(app: object, schema: Any) -> int:
    """Every operation with a JSON body answers 400 ``invalid_json`` to each unparsable body."""
    from fastapi.testclient import TestClient

    checked = 0
    client = TestClient(app)  # type: ignore[arg-type]  # no lifespan: the caller's app stays as it is
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() not in ("POST", "PUT", "PATCH") or "{" in op.path:
            continue
        for body in UNPARSABLE:
            r = client.request(op.method.upper(), op.path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json", (op.path, body[:20], r.text)
        checked += 1
    return checked
