"""Field types every wire model uses the same way, so every service refuses the same inputs.

- :data:`Count`: a strict integer for counts, sizes, steps and seeds. JSON ``true``, ``1.0`` and ``"1"``
  are a 422, never 1 (pydantic's lax mode would take a boolean as an integer).
- :data:`Real`: a float that refuses booleans (lax mode takes ``true`` as 1.0: a pass rate of ``true``).
- :class:`StorableModel`: a model whose strings, at any depth (nested dicts and lists, dict keys, free
  ``Any`` fields such as ``metadata``), can be stored by PostgreSQL and SQLite: no NUL character and no
  lone UTF-16 surrogate (``"\\u0000"`` and ``"\\ud800"`` are valid JSON, but PostgreSQL refuses NUL in
  ``text`` and ``jsonb`` and nothing encodes a lone surrogate as UTF-8). The database-backed services'
  request models (buffer, trainer) derive from it, so such a body is a 422 instead of a 500 at commit.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Strict, model_validator
from pydantic_core import PydanticCustomError

UNSTORABLE = "unstorable_string"
"""The pydantic error type of a string a database cannot store."""

Count = Annotated[int, Strict()]
"""A JSON integer, strictly: no booleans, floats or numeric strings."""


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


Real = Annotated[float, BeforeValidator(_no_bool)]
"""A JSON number (integer or float), not a boolean."""


def unstorable(text: str) -> str | None:
    """Why a database cannot store ``text`` (NUL, lone surrogate), or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not encodable as UTF-8)"
    return None


def find_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first (path, reason) of a string at any depth of ``value`` a database cannot store."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:  # iterative: a deeply nested metadata value must not exhaust the recursion limit
        where, item = stack.pop()
        if isinstance(item, str):
            reason = unstorable(item)
            if reason is not None:
                return where or "value", reason
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (reason := unstorable(key)) is not None:
                    return f"{where}.<key>" if where else "<key>", reason
            # pushed in reverse, so the first bad string in document order is the one reported
            stack.extend((f"{where}.{k}" if where else str(k), sub) for k, sub in reversed(list(item.items())))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}.{i}" if where else str(i), sub) for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, BaseModel):
            stack.append((where, item.model_dump()))
    return None


class StorableModel(BaseModel):
    """A request model whose every string can be stored in the database (see the module docstring)."""

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        found = find_unstorable(data)
        if found is not None:
            where, reason = found
            # the error names the field inside the model: the envelope's ``param`` is built from it
            raise PydanticCustomError(
                UNSTORABLE, "{where} {reason}, which cannot be stored", {"where": where, "reason": reason}
            )
        return data
