"""Fixtures of the trainer tests: tiny models, a PostgreSQL database per session, Redis DB 5."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import build_tiny_gpt2, build_tiny_llama, fill_buffer

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("BTP_TEST_TRAINER_REDIS", "redis://127.0.0.1:6379/5")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription (50x here)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _models_under_pytest_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny models live in pytest's temporary folders: make those a model root (BTP_MODEL_ROOTS) for
    the services these tests build; the tests of the rule itself pass their own ``model_roots``."""
    monkeypatch.setenv("BTP_MODEL_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama HF folder with its tokenizer."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 HF folder (LoRA does not apply to it)."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped after it."""
    from sqlalchemy import create_engine, text

    name = f"btp_trainer_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """Redis DB 5, flushed before and after (only this DB)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture()
def api_settings(tmp_path: Path, redis_url: str) -> object:
    """Trainer settings on a SQLite file and Redis DB 5."""
    from services.trainer.settings import Settings

    return Settings(
        database_url=f"sqlite:///{tmp_path / 'trainer.sqlite3'}", redis_url=redis_url, data_dir=tmp_path
    )


@pytest.fixture()
def api(api_settings: object) -> Iterator[object]:
    """A TestClient on the trainer app."""
    from fastapi.testclient import TestClient

    from services.trainer.app import create_app

    with TestClient(create_app(api_settings)) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture()
def buffer(tmp_path: Path) -> Iterator[object]:
    """The real buffer app on a SQLite file, with four judged experiences."""
    from fastapi.testclient import TestClient

    from services.buffer.app import create_app
    from services.buffer.settings import Settings
    from services.common.client import BufferClient

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'buffer.sqlite3'}", data_dir=tmp_path))
    with TestClient(app) as http:
        client = BufferClient(client=http)  # type: ignore[arg-type]
        fill_buffer(client)
        yield client


