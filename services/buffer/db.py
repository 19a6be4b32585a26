"""Engines and migrations of the buffer's database (PostgreSQL via psycopg 3, or a SQLite file).

- :func:`make_engine` builds an engine with the right settings for either dialect (SQLite: WAL,
  foreign keys, busy timeout, one shared connection for ``:memory:``).
- :func:`migrate` upgrades to Alembic head. It is idempotent and safe when several processes start at
  once: on PostgreSQL the whole upgrade runs in one transaction holding a transaction-level advisory
  lock, so a second process waits, then finds the schema at head and does nothing; on SQLite the
  upgrade runs inside ``BEGIN IMMEDIATE`` (the database write lock) for the same effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x6274705F62756672  # "btp_bufr": the advisory lock the migrations hold
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` / ``postgres://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(engine_or_url: Engine | str) -> bool:
    """Whether the engine or URL is SQLite."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url.dialect.name == "sqlite"
    return make_url(normalize_url(engine_or_url)).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, **kwargs: Any) -> Engine:
    """An engine for ``url``: PostgreSQL (psycopg 3) or SQLite, tuned for the buffer."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in url
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        else:
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", max_overflow)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the shipped migrations (no alembic.ini needed)."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with the package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(target: str | Engine) -> str | None:
    """Upgrade the database to head (idempotent, safe under concurrent starts); returns the revision."""
    engine = target if isinstance(target, Engine) else make_engine(target, pool_size=1, max_overflow=0)
    try:
        cfg = alembic_config()
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if not isinstance(target, Engine):
            engine.dispose()
