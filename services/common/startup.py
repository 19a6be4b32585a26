"""Start-up errors a person reads: one line naming what is missing, where it was looked for, and the setting.

A service started as a process (``btp serve <name>`` or ``uvicorn services.<name>.app:create_app
--factory``: ``create_app()`` without settings) builds its settings from the environment and checks its
dependencies (database, Redis, model, bubblewrap) before uvicorn binds or logs anything. A failure ends
the process with exit code 1 and one line on stderr::

    error: buffer cannot start: PostgreSQL at 127.0.0.1:5999/btp is unreachable: connection refused (set BTP_DATABASE_URL)

The traceback follows only with ``BTP_LOG_LEVEL=DEBUG``. Embedded use and tests pass explicit settings and
get the exceptions instead. A bad ``BTP_*`` value is reported the same way, naming the variable.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)

EXIT_STARTUP = 1
"""Exit code of a process that could not start (a missing or unreachable dependency, a bad setting)."""


class StartupError(Exception):
    """A dependency is missing or unreachable: ``message`` says which and where, ``setting`` what changes it."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting

    def __str__(self) -> str:
        return f"{self.message} (set {self.setting})"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return re.sub(r"\s+", " ", text).strip()


def debug_enabled() -> bool:
    """``BTP_LOG_LEVEL=DEBUG``: show tracebacks behind the one-line errors."""
    return os.environ.get("BTP_LOG_LEVEL", "").strip().upper() == "DEBUG"


def exit_with(line: str, exc: BaseException | None = None, code: int = EXIT_STARTUP) -> NoReturn:
    """Print ``error: <line>`` on stderr (then the traceback under DEBUG) and exit with ``code``."""
    print(f"error: {one_line(line)}", file=sys.stderr, flush=True)
    if exc is not None and debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    raise SystemExit(code)


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from (``BTP_DATABASE_URL``, ``BTP_JUDGE_WORKERS``)."""
    info = settings_cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    return f"{prefix}{field}".upper()


def settings_error_line(settings_cls: type[BaseSettings], exc: PydanticValidationError) -> str:
    """One line for the first bad ``BTP_*`` value: the variable, the value and what is allowed."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    name = env_name(settings_cls, field) if field else settings_cls.__name__
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{name}={err.get('input')!r}: {msg[:1].lower()}{msg[1:]}"


def process_settings(settings_cls: type[S], service: str, check: Callable[[S], None] | None = None) -> S:
    """Settings from the environment for a process that is starting, then ``check(settings)``.

    A bad value or a failed check ends the process with one line (see the module docstring).
    """
    try:
        settings = settings_cls()
    except PydanticValidationError as exc:
        exit_with(f"{service} cannot start: {settings_error_line(settings_cls, exc)}", exc)
    if check is not None:
        try:
            check(settings)
        except StartupError as exc:
            exit_with(f"{service} cannot start: {exc}", exc)
    return settings


# --- addresses and reasons ------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@h:6379/0`` -> ``redis://h:6379/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


def reason(exc: BaseException) -> str:
    """The short cause of a connection error: ``connection refused``, ``timeout expired`` ..."""
    text = one_line(str(getattr(exc, "orig", None) or exc)) or type(exc).__name__
    low = text.lower()
    for known in NETWORK_REASONS:
        if known in low:
            return known
    text = re.sub(r"^\([\w.]+\)\s*", "", text)  # "(psycopg.OperationalError) ..."
    text = re.sub(r"^connection failed: connection to server at .*? failed: ", "", text)  # libpq's preamble
    return text[:300]


NETWORK_REASONS = ("connection refused", "timeout expired", "timed out", "name or service not known",
                   "temporary failure in name resolution", "no route to host", "network is unreachable")  # fmt: skip


# --- checks shared by several services ------------------------------------------------------------


def check_database(url: str, setting: str = "BTP_DATABASE_URL", timeout_s: float = 5.0) -> None:
    """Connect once to ``url`` as the service will (PostgreSQL or SQLite); :class:`StartupError` naming the
    database when that fails."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StartupError(f"database URL {url!r} is not a SQLAlchemy URL: {reason(exc)}", setting) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        where = f"SQLite file {parsed.database or ':memory:'}"
        connect_args: dict[str, object] = {}
    else:
        name = "PostgreSQL" if backend == "postgresql" else backend
        where = f"{name} at {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
        connect_args = {"connect_timeout": max(1, int(timeout_s))} if backend == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except (ArgumentError, ImportError) as exc:
        raise StartupError(f"{where}: {reason(exc)}", setting) from exc
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        why = reason(exc)
        problem = "cannot be opened" if backend == "sqlite" else "is unreachable" if why in NETWORK_REASONS else "refused the connection"
        raise StartupError(f"{where} {problem}: {why}", setting) from exc
    finally:
        engine.dispose()


def check_redis(url: str, setting: str = "BTP_REDIS_URL", timeout_s: float = 3.0, what: str = "Redis") -> None:
    """PING Redis once; :class:`StartupError` naming the address when that fails."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except ValueError as exc:
        raise StartupError(f"{what} URL {safe_url(url)!r} is not a redis:// URL: {reason(exc)}", setting) from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupError(f"{what} at {safe_url(url)} is unreachable: {reason(exc)}", setting) from exc
    finally:
        client.close()


def wait_for_redis(url: str, wait_s: float, setting: str, log: Callable[[str], None], what: str = "Redis") -> None:
    """PING Redis until it answers or ``wait_s`` has passed (then the last :class:`StartupError`)."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            check_redis(url, setting, timeout_s=min(3.0, max(0.5, wait_s)), what=what)
            return
        except StartupError as exc:
            if time.monotonic() >= deadline:
                why = reason(exc.__cause__) if exc.__cause__ is not None else exc.message
                raise StartupError(f"{what} at {safe_url(url)} did not answer within {wait_s:g}s: {why}", setting) from exc
            if not said:
                log(f"waiting up to {wait_s:g}s for {what} at {safe_url(url)} (set {setting})")
                said = True
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
