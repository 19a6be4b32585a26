"""The trainer's tables made by an earlier release (``trainer_loss_points`` without ``at``,
``experience_ids`` and ``weights_versions``) get the new columns when a service starts on them; old rows
stay readable, new steps store what they trained on, and the API returns it (async BTP's lag over HTTP)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from services.trainer import jobs
from services.trainer.db import add_missing_columns, make_engine, make_sessionmaker

OLD_SCHEMA = [
    """CREATE TABLE trainer_jobs (id VARCHAR(64) PRIMARY KEY, status VARCHAR(16), config JSON, step INTEGER,
       total_steps INTEGER, checkpoint TEXT, error TEXT, cancel_requested BOOLEAN, attempts INTEGER,
       resumed_from_step INTEGER, published BOOLEAN, tensorboard_dir TEXT, created_at TIMESTAMP WITH TIME ZONE,
       started_at TIMESTAMP WITH TIME ZONE, finished_at TIMESTAMP WITH TIME ZONE)""",
    """CREATE TABLE trainer_loss_points (id SERIAL PRIMARY KEY, job_id VARCHAR(64) REFERENCES trainer_jobs(id)
       ON DELETE CASCADE, step INTEGER, loss FLOAT, tokens_per_s FLOAT, lr FLOAT,
       CONSTRAINT trainer_loss_points_job_step UNIQUE (job_id, step))""",
    """INSERT INTO trainer_jobs VALUES ('old', 'succeeded',
       '{"model": "m", "batch_size": 2, "steps": 1, "learning_rate": 0.001, "sample": {}}', 1, 1, NULL, NULL,
       false, 1, NULL, NULL, NULL, now(), now(), now())""",
    "INSERT INTO trainer_loss_points (job_id, step, loss, tokens_per_s, lr) VALUES ('old', 1, 2.5, 10.0, 0.001)",
]


def _columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("trainer_loss_points")}
    finally:
        engine.dispose()


def test_old_tables_get_the_new_columns_and_keep_their_rows(pg_url: str) -> None:
    old = create_engine(pg_url)
    with old.begin() as conn:
        for stmt in OLD_SCHEMA:
            conn.execute(text(stmt))
    old.dispose()
    assert "weights_versions" not in _columns(pg_url)

    engine = make_engine(pg_url)  # what every trainer process does at start
    assert {"at", "experience_ids", "weights_versions"} <= _columns(pg_url)
    assert add_missing_columns(engine) == []  # idempotent
    session = make_sessionmaker(engine)()
    before = jobs.get_job(session=session, job_id="old")
    assert [(p.step, p.loss, p.experience_ids, p.weights_versions) for p in before.loss_history] == [(1, 2.5, None, None)]

    jobs.record_step(session=session, job_id="old", step=2, loss=1.5, tokens_per_s=None, lr=None, at=123.5,
                     experience_ids=[7, 9], weights_versions=[3, None])  # fmt: skip
    after = jobs.get_job(session=session, job_id="old")
    assert after.loss_history[-1].model_dump(include={"at", "experience_ids", "weights_versions"}) == {
        "at": 123.5, "experience_ids": [7, 9], "weights_versions": [3, None]}  # fmt: skip
    session.close()
    engine.dispose()


def test_processes_starting_together_on_old_tables_both_succeed(pg_url: str) -> None:
    """The API and a worker upgrading at once: the loser of the ALTER race ignores the duplicate column."""
    old = create_engine(pg_url)
    with old.begin() as conn:
        for stmt in OLD_SCHEMA[:2]:
            conn.execute(text(stmt))
    old.dispose()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            make_engine(pg_url).dispose()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {"at", "experience_ids", "weights_versions"} <= _columns(pg_url)


def test_sqlite_tables_are_upgraded_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trainer.sqlite3'}"
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(text("CREATE TABLE trainer_loss_points (id INTEGER PRIMARY KEY, job_id VARCHAR(64), "
                          "step INTEGER, loss FLOAT, tokens_per_s FLOAT, lr FLOAT)"))  # fmt: skip
    old.dispose()
    make_engine(url).dispose()
    assert {"at", "experience_ids", "weights_versions"} <= _columns(url)


@pytest.mark.parametrize("bad", [["x"], "nope"])
def test_bad_experience_ids_are_refused_by_the_schema(bad: object) -> None:
    from pydantic import ValidationError

    from services.common.schemas.trainer import LossPoint

    with pytest.raises(ValidationError):
        LossPoint(step=1, loss=1.0, experience_ids=bad)  # type: ignore[arg-type]
