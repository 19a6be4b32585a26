"""Migrations: from an empty database to head on both stores, idempotent, concurrent starts on
PostgreSQL (advisory lock) and SQLite (BEGIN IMMEDIATE), downgrade and upgrade again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from services.buffer.db import alembic_config, current_revision, head_revision, make_engine, migrate

ROOT = Path(__file__).resolve().parents[2]


def test_empty_database_to_head_and_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    assert migrate(db_url) == head_revision() == "0002"
    assert migrate(db_url) == "0002"
    names = set(inspect(engine).get_table_names())
    assert {"tasks", "experiences", "buffer_state", "alembic_version"} <= names
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, version, task_version FROM buffer_state")).all() == [(1, 0, 0)]
    uniques = {ix["name"] for ix in inspect(engine).get_indexes("experiences") if ix["unique"]}
    assert "uq_experiences_identity" in uniques
    engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "experiences" not in inspect(engine).get_table_names()
    engine.dispose()
    assert migrate(db_url) == "0002"


def test_concurrent_processes_migrate_once(db_url: str) -> None:
    code = "import sys; from services.buffer.db import migrate; print(migrate(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].strip() for o in outs] == ["0002"] * 4
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM buffer_state")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()


def test_0002_adds_weights_version_keeping_rows(db_url: str) -> None:
    """A buffer at 0001 with programs upgrades in place: old rows keep their data, weights_version null."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    stamp = "2026-12-01 00:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tasks (id, dataset, split, prompt, tests, metadata, created_at, updated_at) "
                          f"VALUES ('t', 'd', 'train', 'p', '{{}}', '{{}}', '{stamp}', '{stamp}')"))  # fmt: skip
        conn.execute(text(
            "INSERT INTO experiences (task_id, task_seq, program, program_hash, source, source_key, group_key, "
            "logprob, token_count, probability, round, created_at, row_version) "
            f"VALUES ('t', 1, 'x = 1', :h, 's', 1, 1, -1.0, 3, 0.3, 0, '{stamp}', 1)"
        ), {"h": b"\x00" * 32})
    assert "weights_version" not in {c["name"] for c in inspect(engine).get_columns("experiences")}
    assert migrate(db_url) == "0002"
    engine.dispose()
    engine = make_engine(db_url)
    assert "weights_version" in {c["name"] for c in inspect(engine).get_columns("experiences")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT program, weights_version FROM experiences")).all() == [("x = 1", None)]
    engine.dispose()
