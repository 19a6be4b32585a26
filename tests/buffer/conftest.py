"""Fixtures of the buffer tests: a real PostgreSQL database per test session (one fresh schema per
test) and a SQLite file per test; the app in-process through Starlette's TestClient."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from services.buffer.app import create_app
from services.buffer.settings import Settings

PG_HOST = os.environ.get("BTP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BTP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BTP_TEST_PG_USER", "postgres")


def pg_dsn(dbname: str) -> str:
    """A libpq connection string for the test server."""
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={dbname}"


def pg_url(dbname: str, schema: str | None = None) -> str:
    """A SQLAlchemy URL (psycopg 3), optionally pinned to one schema through search_path."""
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"
    if schema:
        url += f"?options=-csearch_path%3D{schema}"
    return url


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named database for this test session, dropped at the end."""
    name = f"btp_buffer_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema_url(pg_database: str) -> Iterator[str]:
    """An empty schema of the session database for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn(pg_database), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield pg_url(pg_database, schema)
    finally:
        with psycopg.connect(pg_dsn(pg_database), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'buffer.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on both stores."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_schema_url"
    return str(request.getfixturevalue(fixture))


def make_settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Explicit settings (no environment leakage beyond BTP_* names the test does not set)."""
    values: dict[str, Any] = {"database_url": url, "data_dir": tmp_path, "api_token": None}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The buffer app on a fresh store (both dialects), lifespan running."""
    app = create_app(make_settings(db_url, tmp_path, max_sample_n=5000, max_program_bytes=4096, max_items_per_request=500))
    with TestClient(app) as c:
        yield c


def task_json(task_id: str, dataset: str = "humaneval", split: str = "test", prompt: str | None = None) -> dict[str, Any]:
    """A task body in the HumanEval format."""
    return {
        "id": task_id,
        "dataset": dataset,
        "split": split,
        "prompt": prompt if prompt is not None else f"def f_{abs(hash(task_id)) % 1000}():\n",
        "tests": {"kind": "check", "entry_point": "f", "code": "def check(candidate):\n    assert candidate() == 1\n"},
    }


def experience_json(task_id: str, program: str, logprob: float = -1.0, **extra: Any) -> dict[str, Any]:
    """An experience body."""
    body: dict[str, Any] = {"task_id": task_id, "program": program, "logprob": logprob, "token_count": 10}
    body.update(extra)
    return body
