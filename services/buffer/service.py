"""The buffer's service layer: keyword-only functions over a SQLAlchemy session, no FastAPI import.

Every write runs in one transaction whose first statement bumps the change marker (see
:mod:`services.buffer.tables`); input is validated completely before that, so a rejected request
writes nothing. Inserts use ``INSERT .. ON CONFLICT DO NOTHING`` on both dialects, so concurrent
retries of the same batch never duplicate: the loser of a race finds the winner's row and returns its id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.common.errors import NotFoundError, PayloadTooLargeError, ValidationError
from services.common.schemas.buffer import (
    ExperienceCreateRequest,
    ExperienceCreateResponse,
    ExperienceList,
    ExperienceOut,
    ExperienceUpdate,
    GroupStats,
    GroupStatsResponse,
    TaskList,
    TaskOut,
    TaskUpsertRequest,
    TaskUpsertResponse,
)

from .settings import Settings
from .tables import BufferState, Experience, Task, group_key, key64, program_digest

CHUNK = 1000
"""Rows per multi-row INSERT / IN list: well under PostgreSQL's 65,535 and SQLite's 32,766 parameters."""

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT (both PostgreSQL and SQLite have ON CONFLICT)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def bump_version(session: Session, *, tasks: bool = False) -> int:
    """First statement of every write: take the writer lock and return the new version."""
    column = BufferState.task_version if tasks else BufferState.version
    stmt = update(BufferState).where(BufferState.id == 1).values({column.key: column + 1}).returning(column)
    return int(session.execute(stmt).scalar_one())


# --- input checks the database would otherwise turn into 500s ---------------------------------------


def check_text(value: str, param: str) -> None:
    """Reject text PostgreSQL cannot store (NUL) or that is not valid Unicode (lone surrogates)."""
    if "\x00" in value:
        raise ValidationError(f"{param}: NUL characters are not allowed", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{param}: not valid Unicode (lone surrogate)", param=param) from None


def check_json(value: Any, param: str, depth: int = 0) -> None:
    """Reject JSON values the stores cannot hold: NaN/Infinity, NUL, lone surrogates, deep nesting."""
    if depth > 64:
        raise ValidationError(f"{param}: nested too deeply", param=param)
    if isinstance(value, str):
        check_text(value, param)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{param}: NaN and Infinity are not valid JSON", param=param)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(str(k), param)
            check_json(v, param, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_json(v, param, depth + 1)


# --- tasks ------------------------------------------------------------------------------------------


def _task_out(task: Task) -> TaskOut:
    return TaskOut.model_validate(
        {
            "id": task.id,
            "dataset": task.dataset,
            "split": task.split,
            "prompt": task.prompt,
            "tests": task.tests,
            "difficulty": task.difficulty,
            "metadata": task.meta or {},
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }
    )


def upsert_tasks(*, session: Session, request: TaskUpsertRequest, settings: Settings) -> TaskUpsertResponse:
    """Insert or update tasks by id (last occurrence wins within one request)."""
    if len(request.tasks) > settings.max_items_per_request:
        raise ValidationError(
            f"at most {settings.max_items_per_request} tasks per request", param="tasks"
        )
    stamp = now()
    rows: dict[str, dict[str, Any]] = {}
    for i, task in enumerate(request.tasks):
        for name in ("id", "dataset", "split", "prompt", "difficulty"):
            value = getattr(task, name)
            if value is not None:
                check_text(value, f"tasks[{i}].{name}")
        tests = task.tests.model_dump(mode="json")
        check_json(tests, f"tasks[{i}].tests")
        check_json(task.metadata, f"tasks[{i}].metadata")
        rows[task.id] = {
            "id": task.id,
            "dataset": task.dataset,
            "split": task.split,
            "difficulty": task.difficulty,
            "prompt": task.prompt,
            "tests": tests,
            "metadata": task.metadata,
            "created_at": stamp,
            "updated_at": stamp,
        }
    ids = list(rows)
    with session.begin():
        bump_version(session, tasks=True)
        existing: set[str] = set()
        for part in chunks(ids):
            existing.update(session.scalars(select(Task.id).where(Task.id.in_(part))))
        values = list(rows.values())
        for vpart in chunks(values, 500):
            stmt = _insert(session, Task.__table__).values(list(vpart))
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    name: stmt.excluded[name]
                    for name in ("dataset", "split", "difficulty", "prompt", "tests", "metadata", "updated_at")
                },
            )
            session.execute(stmt)
    return TaskUpsertResponse(
        ids=[t.id for t in request.tasks], created=len(ids) - len(existing), updated=len(existing)
    )


def get_task(*, session: Session, task_id: str) -> TaskOut:
    """One task by id, or 404."""
    check_text(task_id, "task_id")
    task = session.scalars(select(Task).where(Task.id == task_id)).one_or_none()
    if task is None:
        raise NotFoundError(f"no task {task_id!r}", param="task_id")
    return _task_out(task)


def list_tasks(
    *, session: Session, dataset: str | None, split: str | None, limit: int, offset: int
) -> TaskList:
    """Tasks ordered by insertion, filtered by dataset and split."""
    query: Select[Any] = select(Task)
    for value, column, name in ((dataset, Task.dataset, "dataset"), (split, Task.split, "split")):
        if value is not None:
            check_text(value, name)
            query = query.where(column == value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    tasks = session.scalars(query.order_by(Task.seq).limit(limit).offset(offset)).all()
    return TaskList(items=[_task_out(t) for t in tasks], total=total)


# --- experiences ------------------------------------------------------------------------------------


def experience_out(e: Experience) -> ExperienceOut:
    """The wire form of a stored experience."""
    return ExperienceOut(
        id=e.id,
        task_id=e.task_id,
        program=e.program,
        logprob=e.logprob,
        token_count=e.token_count,
        probability=e.probability,
        pass_rate=e.pass_rate,
        judge=e.judge,
        source=e.source,
        round=e.round,
        generation=e.generation,
        weights_version=e.weights_version,
        created_at=e.created_at,
        judged_at=e.judged_at,
    )


def _validate_experiences(request: ExperienceCreateRequest, settings: Settings) -> None:
    if len(request.items) > settings.max_items_per_request:
        raise ValidationError(f"at most {settings.max_items_per_request} experiences per request", param="items")
    for i, item in enumerate(request.items):
        check_text(item.program, f"items[{i}].program")
        size = len(item.program.encode("utf-8"))
        if size > settings.max_program_bytes:
            raise PayloadTooLargeError(
                f"items[{i}].program is {size} bytes; the limit is {settings.max_program_bytes}",
                param=f"items[{i}].program",
            )
        for name in ("task_id", "source", "generation"):
            value = getattr(item, name)
            if value is not None:
                check_text(value, f"items[{i}].{name}")
        if not math.isfinite(item.logprob):
            raise ValidationError(f"items[{i}].logprob must be finite", param=f"items[{i}].logprob")
        if item.judge is not None:
            check_json(item.judge, f"items[{i}].judge")


def _task_seqs(session: Session, task_ids: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    wanted = sorted(set(task_ids))
    if session.get_bind().dialect.name == "postgresql":
        # one array parameter instead of an IN list of thousands of placeholders
        query = text("SELECT id, seq FROM tasks WHERE id = ANY(:ids)")
        return {tid: int(seq) for tid, seq in session.execute(query, {"ids": wanted})}
    for part in chunks(wanted):
        found.update({tid: int(seq) for tid, seq in session.execute(select(Task.id, Task.seq).where(Task.id.in_(part)))})
    return found


def create_experiences(
    *, session: Session, request: ExperienceCreateRequest, settings: Settings
) -> ExperienceCreateResponse:
    """Bulk insert in one transaction; (task_id, program, source) already stored returns its id.

    An unknown task is a 422 (``validation_error``, param ``items[i].task_id``): the body refers to
    something that does not exist; the URL itself is fine. Nothing is written.
    """
    _validate_experiences(request, settings)
    stamp = now()
    keys: list[tuple[bytes, str, str]] = []
    rows: dict[tuple[bytes, str, str], dict[str, Any]] = {}
    for item in request.items:
        digest = program_digest(item.program)
        key = (digest, item.task_id, item.source)
        keys.append(key)
        if key in rows:
            continue
        probability = item.probability if item.probability is not None else math.exp(item.logprob)
        rows[key] = {
            "task_id": item.task_id,
            "program": item.program,
            "program_hash": digest,
            "source": item.source,
            "source_key": key64(item.source),
            "group_key": group_key(item.task_id, item.source, item.round, item.generation),
            "logprob": item.logprob,
            "token_count": item.token_count,
            "probability": min(max(probability, 0.0), 1.0),
            "pass_rate": item.pass_rate,
            "judge": item.judge,
            "round": item.round,
            "generation": item.generation,
            "weights_version": item.weights_version,
            "created_at": stamp,
            "judged_at": stamp if item.pass_rate is not None else None,
        }
    with session.begin():
        seqs = _task_seqs(session, (k[1] for k in rows))
        for i, item in enumerate(request.items):
            if item.task_id not in seqs:
                raise ValidationError(f"unknown task {item.task_id!r}", param=f"items[{i}].task_id")
        version = bump_version(session)
        # bump_version serialises writers (row lock until commit), so overlapping batches cannot
        # deadlock on the unique index; ON CONFLICT makes a retry that lost the race find the winner.
        ordered = list(rows.values())
        for row in ordered:
            row["task_seq"] = seqs[row["task_id"]]
            row["row_version"] = version
        if session.get_bind().dialect.name == "postgresql":
            created, ids = _insert_experiences_pg(session, ordered)
        else:
            created = _insert_experiences_generic(session, ordered)
            ids = _lookup_ids(session, sorted({k[0] for k in rows}))
    return ExperienceCreateResponse(ids=[ids[k] for k in keys], created=created)


_COLUMNS = (
    "task_id, task_seq, program, program_hash, source, source_key, group_key, logprob, token_count, "
    "probability, pass_rate, judge, round, generation, weights_version, created_at, judged_at, row_version"
)
_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS experiences_in (task_id VARCHAR, task_seq BIGINT, program TEXT, "
    "program_hash BYTEA, source VARCHAR, source_key BIGINT, group_key BIGINT, logprob DOUBLE PRECISION, "
    "token_count INTEGER, probability DOUBLE PRECISION, pass_rate DOUBLE PRECISION, judge JSONB, "
    "round INTEGER, generation VARCHAR, weights_version BIGINT, created_at TIMESTAMPTZ, judged_at TIMESTAMPTZ, row_version BIGINT) "
    "ON COMMIT DELETE ROWS"
)


def _insert_experiences_pg(session: Session, rows: list[dict[str, Any]]) -> tuple[int, dict[tuple[bytes, str, str], int]]:
    """PostgreSQL: COPY the batch into a per-connection staging table, then one INSERT .. SELECT ..
    ON CONFLICT DO NOTHING and one join to read back every id.

    A literal multi-row VALUES clause makes SQLAlchemy (compiling) and psycopg (parsing ~17,000
    placeholders) spend more time than the database does; COPY keeps the statements tiny.
    """
    raw = session.connection().connection.driver_connection
    assert raw is not None
    names = [c.strip() for c in _COLUMNS.split(",")]
    with raw.cursor() as cur:
        cur.execute("SET LOCAL client_min_messages = warning")
        cur.execute(_STAGING_DDL)
        with cur.copy(f"COPY experiences_in ({_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                judge = row["judge"]
                copy.write_row([json.dumps(judge) if (n == "judge" and judge is not None) else row[n] for n in names])
        cur.execute(
            f"INSERT INTO experiences ({_COLUMNS}) SELECT {_COLUMNS} FROM experiences_in "
            "ON CONFLICT (program_hash, task_id, source) DO NOTHING RETURNING id"
        )
        created = len(cur.fetchall())
        cur.execute(
            "SELECT e.id, e.program_hash, e.task_id, e.source FROM experiences_in i JOIN experiences e "
            "ON e.program_hash = i.program_hash AND e.task_id = i.task_id AND e.source = i.source"
        )
        ids = {(bytes(h), t, s): int(i) for i, h, t, s in cur.fetchall()}
    return created, ids


def _insert_experiences_generic(session: Session, rows: list[dict[str, Any]]) -> int:
    """SQLite (and any other dialect): one compiled statement, executemany-style batches."""
    table = Experience.__table__
    stmt = _insert(session, table).on_conflict_do_nothing(index_elements=["program_hash", "task_id", "source"])
    return len(session.execute(stmt.returning(table.c.id), rows).all())


def _lookup_ids(session: Session, digests: list[bytes]) -> dict[tuple[bytes, str, str], int]:
    """(program_hash, task_id, source) -> id for every stored experience with one of these digests."""
    ids: dict[tuple[bytes, str, str], int] = {}
    columns = (Experience.id, Experience.program_hash, Experience.task_id, Experience.source)
    for part in chunks(digests):
        for eid, digest, task_id, source in session.execute(select(*columns).where(Experience.program_hash.in_(part))):
            ids[(bytes(digest), task_id, source)] = int(eid)
    return ids


def get_experience(*, session: Session, experience_id: int) -> ExperienceOut:
    """One experience by id, or 404."""
    e = session.get(Experience, experience_id)
    if e is None:
        raise NotFoundError(f"no experience {experience_id}", param="experience_id")
    return experience_out(e)


def list_experiences(
    *,
    session: Session,
    task_id: str | None = None,
    source: str | None = None,
    round_: int | None = None,
    judged: bool | None = None,
    dataset: str | None = None,
    split: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> ExperienceList:
    """Experiences ordered by id, with filters."""
    query: Select[Any] = select(Experience)
    for value, name in ((task_id, "task_id"), (source, "source"), (dataset, "dataset"), (split, "split")):
        if value is not None:
            check_text(value, name)
    if task_id is not None:
        query = query.where(Experience.task_id == task_id)
    if source is not None:
        query = query.where(Experience.source == source)
    if round_ is not None:
        query = query.where(Experience.round == round_)
    if judged is not None:
        query = query.where(Experience.pass_rate.is_not(None) if judged else Experience.pass_rate.is_(None))
    if dataset is not None or split is not None:
        query = query.join(Task, Task.id == Experience.task_id)
        if dataset is not None:
            query = query.where(Task.dataset == dataset)
        if split is not None:
            query = query.where(Task.split == split)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Experience.id).limit(limit).offset(offset)).all()
    return ExperienceList(items=[experience_out(e) for e in items], total=total)


def update_experience(*, session: Session, experience_id: int, update_: ExperienceUpdate) -> ExperienceOut:
    """The testing phase: set pass_rate (and judge details) of one experience."""
    if update_.judge is not None:
        check_json(update_.judge, "judge")
    with session.begin():
        if session.get(Experience, experience_id) is None:
            raise NotFoundError(f"no experience {experience_id}", param="experience_id")
        version = bump_version(session)
        values: dict[str, Any] = {"pass_rate": update_.pass_rate, "judged_at": now(), "row_version": version}
        if update_.judge is not None:
            values["judge"] = update_.judge
        session.execute(update(Experience).where(Experience.id == experience_id).values(values))
    session.expire_all()
    return get_experience(session=session, experience_id=experience_id)


def histogram(values: np.ndarray, bins: int = 10) -> tuple[list[float], list[int]]:
    """Counts of values in [0, 1] over equal bins."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return [float(e) for e in edges], [int(c) for c in counts]


def experience_groups(*, session: Session, dataset: str | None = None) -> GroupStatsResponse:
    """Experiences per (round, source): counts, judged and mean pass rate."""
    stmt = select(
        Experience.round, Experience.source, func.count(), func.count(Experience.pass_rate), func.avg(Experience.pass_rate)
    ).group_by(Experience.round, Experience.source).order_by(Experience.round, Experience.source)
    if dataset is not None:
        stmt = stmt.join(Task, Task.id == Experience.task_id).where(Task.dataset == dataset)
    with session.begin():
        rows = session.execute(stmt).all()
    return GroupStatsResponse(groups=[
        GroupStats(round=int(r), source=str(src), experiences=int(n), judged=int(j),
                   mean_pass_rate=float(m) if m is not None else None)
        for r, src, n, j, m in rows
    ])
