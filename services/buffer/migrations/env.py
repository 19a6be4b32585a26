"""Alembic environment of the buffer.

The service calls :func:`services.buffer.db.migrate`, which hands over an open connection (inside the
transaction that holds the migration lock) through ``config.attributes["connection"]``. From the CLI
the URL comes from ``-x url=...``, ``sqlalchemy.url`` or ``BTP_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context

from services.buffer.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("BTP_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: pass -x url=..., set sqlalchemy.url or BTP_DATABASE_URL")
    return url


def run_offline() -> None:
    """Emit SQL without a database."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the connection handed over by migrate(), or migrate the URL (with its lock)."""
    connection = config.attributes.get("connection")
    if connection is None:
        from services.buffer.db import migrate

        migrate(_url())
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
