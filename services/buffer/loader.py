"""Reading the buffer's tables into numpy for the priority index (no FastAPI import).

- :func:`read_markers`: the change markers (one primary-key read).
- :func:`load_rows`: every experience, or those written after a version, as a structured array
  sorted by id. PostgreSQL streams them with binary COPY parsed in place by numpy; other stores go
  through the DB-API cursor.
- :func:`load_task_map`: task seq -> dataset and split codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from .tables import BufferState, Task

ROW_DTYPE = np.dtype(
    [
        ("id", np.int64),
        ("task_seq", np.int64),
        ("source_key", np.int64),
        ("group_key", np.int64),
        ("logprob", np.float64),
        ("token_count", np.int64),
        ("pass_rate", np.float64),
    ]
)
_ROW_COLUMNS = "id, task_seq, source_key, group_key, logprob, token_count, COALESCE(pass_rate, -1.0), row_version"


@dataclass(frozen=True)
class TaskMap:
    """task seq -> dataset code and split code (code -1: no such task)."""

    dataset_code: npt.NDArray[np.int32]
    split_code: npt.NDArray[np.int32]
    datasets: dict[str, int]
    splits: dict[str, int]
    task_version: int
    prompts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """task id -> prompt, filled lazily by the sample path: valid for this task_version only (an upsert
    bumps task_version, and a new map, empty again, replaces this one)."""


def read_markers(conn: Connection | Session) -> tuple[int, int]:
    """(version, task_version) of the change marker row."""
    row = conn.execute(select(BufferState.version, BufferState.task_version).where(BufferState.id == 1)).one()
    return int(row[0]), int(row[1])


# PostgreSQL binary COPY of eight non-null 8-byte columns (the seven of ROW_DTYPE, then row_version):
# every tuple has the same layout (int16 field count, then int32 length + big-endian value per field),
# so numpy reads it in place.
_COPY_DTYPE = np.dtype(
    [("nfields", ">i2")]
    + [
        item
        for name, kind in [*((n, ROW_DTYPE[n].str[1:]) for n in ROW_DTYPE.names or ()), ("row_version", "i8")]
        for item in ((f"len_{name}", ">i4"), (name, ">" + kind))
    ]
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"


def _load_rows_copy(conn: Connection | Session, where: str, params: dict[str, Any]) -> tuple[npt.NDArray[Any], int]:
    raw = conn.connection().connection.driver_connection if isinstance(conn, Session) else conn.connection.driver_connection
    assert raw is not None
    query = (
        f"COPY (SELECT id, task_seq, source_key, group_key, logprob, token_count::int8, "
        f"COALESCE(pass_rate, -1.0), row_version FROM experiences {where} ORDER BY id) TO STDOUT (FORMAT BINARY)"
    )
    data = bytearray()
    with raw.cursor() as cur, cur.copy(query, params) as copy:
        for chunk in copy:
            data += chunk
    if not data.startswith(_COPY_HEADER):
        raise RuntimeError("unexpected COPY BINARY header")
    ext = int.from_bytes(data[15:19], "big")
    body = memoryview(data)[19 + ext : len(data) - 2]  # minus the int16 -1 trailer
    packed = np.frombuffer(body, dtype=_COPY_DTYPE)
    rows = np.empty(packed.size, dtype=ROW_DTYPE)
    for name in ROW_DTYPE.names or ():
        rows[name] = packed[name]
    return rows, int(packed["row_version"].max()) if packed.size else 0


def load_rows(conn: Connection | Session, after_version: int | None = None) -> npt.NDArray[Any]:
    """Experiences (all, or those written after a version) as a structured array sorted by id."""
    return load_rows_versioned(conn, after_version)[0]


def load_rows_versioned(conn: Connection | Session, after_version: int | None = None) -> tuple[npt.NDArray[Any], int]:
    """(rows, highest row_version among them, 0 if none): experiences (all, or those written after a
    version) as a structured array sorted by id, read by one statement.

    The version comes from the same statement as the rows, so it never names a write the rows miss
    (a second ``SELECT MAX(row_version)`` under READ COMMITTED could see a write committed in between,
    and a snapshot stamped with it would never fetch that write's rows). PostgreSQL streams them with
    binary COPY straight into numpy (1M rows in about a second); other stores go through the DB-API cursor.
    """
    where, params = "", {}
    if after_version is not None:
        where, params = "WHERE row_version > %(v)s", {"v": after_version}
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    if dialect == "postgresql":
        rows, top = _load_rows_copy(conn, where, params)
    else:
        sql = f"SELECT {_ROW_COLUMNS} FROM experiences {where.replace('%(v)s', ':v')} ORDER BY id"
        result = conn.execute(text(sql), params).all()
        rows = np.fromiter((tuple(r[:-1]) for r in result), dtype=ROW_DTYPE, count=len(result))
        top = max((int(r[-1]) for r in result), default=0)
    pr = rows["pass_rate"]
    pr[pr < 0] = np.nan
    return rows, top


def load_task_map(conn: Connection | Session, task_version: int) -> TaskMap:
    """Reload the small task seq -> (dataset, split) map."""
    result = conn.execute(select(Task.seq, Task.dataset, Task.split)).all()
    size = max((int(r[0]) for r in result), default=0) + 1
    dataset_code = np.full(size, -1, dtype=np.int32)
    split_code = np.full(size, -1, dtype=np.int32)
    datasets: dict[str, int] = {}
    splits: dict[str, int] = {}
    for seq, dataset, split in result:
        dataset_code[int(seq)] = datasets.setdefault(dataset, len(datasets))
        split_code[int(seq)] = splits.setdefault(split, len(splits))
    return TaskMap(dataset_code, split_code, datasets, splits, task_version)
