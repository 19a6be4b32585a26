"""The priority index: incremental refresh equals a full reload; two processes (two apps, each with
its own index) sharing one database see each other's writes through the change marker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.buffer.app import create_app
from services.buffer.db import make_engine, migrate
from services.buffer.index import PriorityIndex, merge_rows
from services.buffer.loader import load_rows

from .conftest import experience_json, make_settings, task_json


def _rows_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a.size == b.size and all(np.array_equal(a[n], b[n], equal_nan=True) for n in a.dtype.names or ()))


def test_incremental_refresh_matches_full_reload(db_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(db_url, tmp_path))
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json("A/1"), task_json("B/1", dataset="b")]})
        index: PriorityIndex = app.state.buffer.index
        engine = app.state.buffer.engine
        for step in range(4):
            ids = client.post(
                "/v1/experiences", json={"items": [experience_json("A/1" if i % 2 else "B/1", f"s{step} p{i}") for i in range(7)]}
            ).json()["ids"]
            client.patch(f"/v1/experiences/{ids[0]}", json={"pass_rate": 0.1 * step})
            assert client.post("/v1/sample", json={"n": 3, "include_unjudged": True}).json()["population"] == 7 * (step + 1)
            with engine.connect() as conn:
                full = load_rows(conn)
                snap = index.current(conn)
            assert _rows_equal(snap.rows, full)
        assert index.full_loads == 1 and index.incremental_loads >= 3


def test_merge_rows_handles_updates_and_out_of_order_ids() -> None:
    from services.buffer.index import ROW_DTYPE

    base = np.zeros(3, dtype=ROW_DTYPE)
    base["id"] = [1, 5, 9]
    delta = np.zeros(2, dtype=ROW_DTYPE)
    delta["id"] = [3, 5]
    delta["pass_rate"] = [0.5, 1.0]
    merged, changed = merge_rows(base, delta)
    assert merged["id"].tolist() == [1, 3, 5, 9]
    assert merged["pass_rate"].tolist() == [0.0, 0.5, 1.0, 0.0]
    assert changed is None  # an id below the newest: re-sorted, callers rebuild
    assert base["pass_rate"].tolist() == [0.0, 0.0, 0.0]  # copy-on-write: old snapshot untouched
    delta["id"] = [5, 12]
    merged, changed = merge_rows(base, delta)
    assert merged["id"].tolist() == [1, 5, 9, 12] and changed is not None and changed.tolist() == [1, 3]


def test_two_processes_share_one_database(db_url: str, tmp_path: Path) -> None:
    """A sample served by app B reflects an insert and a PATCH made through app A."""
    migrate(db_url)
    a = create_app(make_settings(db_url, tmp_path))
    b = create_app(make_settings(db_url, tmp_path))
    with TestClient(a) as ca, TestClient(b) as cb:
        ca.post("/v1/tasks", json={"tasks": [task_json("X/1")]})
        (e1,) = ca.post("/v1/experiences", json={"items": [experience_json("X/1", "one", pass_rate=0.0)]}).json()["ids"]
        assert cb.post("/v1/sample", json={"n": 4}).json()["population"] == 1  # B builds its index
        (e2,) = ca.post("/v1/experiences", json={"items": [experience_json("X/1", "two", pass_rate=0.0)]}).json()["ids"]
        assert cb.post("/v1/sample", json={"n": 4}).json()["population"] == 2
        ca.patch(f"/v1/experiences/{e2}", json={"pass_rate": 1.0})
        out = cb.post("/v1/sample", json={"n": 64, "scheme": "proportional", "alpha": 0.0, "seed": 0}).json()
        probs = {i["experience_id"]: i["sample_probability"] for i in out["items"]}
        assert probs[e2] > 0.99 and probs.get(e1, 1e-6) < 1e-5
        ca.post("/v1/tasks", json={"tasks": [task_json("X/1", dataset="moved")]})
        assert cb.post("/v1/sample", json={"n": 1, "dataset": "moved"}).json()["population"] == 2
        assert cb.get("/v1/stats").json()["datasets"]["moved"]["judged"] == 2


def test_sample_sees_rows_committed_between_marker_and_load(db_url: str, tmp_path: Path) -> None:
    """Rows stamped with a version above the marker read earlier still land in a consistent snapshot."""
    app = create_app(make_settings(db_url, tmp_path))
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json("Y/1")]})
        client.post("/v1/experiences", json={"items": [experience_json("Y/1", "a", pass_rate=1.0)]})
        engine = make_engine(db_url)
        with engine.begin() as conn:  # simulate a marker that lags the rows
            conn.execute(text("UPDATE buffer_state SET version = version - 1 WHERE id = 1"))
        index: PriorityIndex = app.state.buffer.index
        with engine.connect() as conn:
            snap = index.current(conn)
        assert snap.rows.size == 1 and snap.version >= 1
        engine.dispose()


@pytest.mark.parametrize("scheme", ["rank", "proportional"])
def test_incremental_rank_matches_a_full_rebuild(db_url: str, tmp_path: Path, scheme: str) -> None:
    """After inserts and PATCHes (with many P2Value ties), the incrementally kept rank order (rank) and
    sum tree (proportional) equal a fresh build, and draw the same rows with the same P(i)."""
    app = create_app(make_settings(db_url, tmp_path))
    rng = np.random.default_rng(3)
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json("R/1"), task_json("R/2", dataset="other")]})
        index: PriorityIndex = app.state.buffer.index
        engine = app.state.buffer.engine
        all_ids: list[int] = []
        for step in range(5):
            items = [
                experience_json(f"R/{1 + i % 2}", f"s{step} p{i}", logprob=float(-rng.integers(1, 4)), token_count=2,
                                pass_rate=float(rng.choice([0.0, 0.5, 1.0])) if i % 3 else None)
                for i in range(30)
            ]
            all_ids += client.post("/v1/experiences", json={"items": items}).json()["ids"]
            for eid in rng.choice(all_ids, 5, replace=False):
                client.patch(f"/v1/experiences/{int(eid)}", json={"pass_rate": float(rng.choice([0.0, 0.5, 1.0]))})
            for alpha, dataset in ((0.0, None), (0.5, "humaneval"), (1.0, None)):
                params = {"scheme": scheme, "possibility": "token_mean", "alpha": alpha, "exponent": 1.0,
                          "dataset": dataset, "split": None, "source": None, "include_unjudged": False}
                with engine.connect() as conn:
                    snap = index.current(conn)
                    got = index.prepared(snap, **params)  # type: ignore[arg-type]
                    fresh_index = PriorityIndex()
                    fresh_snap = fresh_index.current(conn)
                    want = fresh_index.prepared(fresh_snap, **params)  # type: ignore[arg-type]
                assert snap.rows["id"][got.positions].tolist() == fresh_snap.rows["id"][want.positions].tolist()
                np.testing.assert_array_equal(got.p2value, want.p2value)
                assert got.state is not None and got.size == want.size
                if got.size:
                    g_pos, g_prob, g_p2 = got.draw(64, np.random.default_rng(step))
                    w_pos, w_prob, w_p2 = want.draw(64, np.random.default_rng(step))
                    assert snap.rows["id"][g_pos].tolist() == fresh_snap.rows["id"][w_pos].tolist()
                    np.testing.assert_allclose(g_prob, w_prob, rtol=1e-12)
                    np.testing.assert_array_equal(g_p2, w_p2)
                # carried-over per-row caches equal a recomputation
                np.testing.assert_array_equal(snap.possibility("token_mean"), fresh_snap.possibility("token_mean"))
                np.testing.assert_array_equal(snap.dataset_codes(), fresh_snap.dataset_codes())
        assert index.incremental_prepares >= 8


def test_apply_delta_appends_in_place_and_updates_copy_on_write() -> None:
    from services.buffer.index import ROW_DTYPE, Snapshot, TaskMap, apply_delta, columns_from_rows

    base = np.zeros(3, dtype=ROW_DTYPE)
    base["id"] = [1, 5, 9]
    base["pass_rate"] = [0.0, np.nan, 1.0]
    tasks = TaskMap(np.zeros(1, np.int32), np.zeros(1, np.int32), {}, {}, 0)
    parent = Snapshot(version=1, tasks=tasks, n=3, cols=columns_from_rows(base))
    delta = np.zeros(2, dtype=ROW_DTYPE)
    delta["id"] = [5, 12]
    delta["pass_rate"] = [0.5, 0.25]
    cols, n, changed = apply_delta(parent, delta)
    child = Snapshot(version=2, tasks=tasks, n=n, cols=cols, changed=changed)
    assert child.col("id").tolist() == [1, 5, 9, 12] and changed is not None and changed.tolist() == [1, 3]
    assert child.col("pass_rate").tolist() == [0.0, 0.5, 1.0, 0.25]
    assert cols["id"] is parent.cols["id"]  # appended in place into spare capacity
    assert cols["pass_rate"] is not parent.cols["pass_rate"]  # updated copy-on-write
    assert parent.col("id").tolist() == [1, 5, 9] and np.isnan(parent.col("pass_rate")[1])  # parent intact
    # an id below the newest falls back to a re-sort
    late = np.zeros(1, dtype=ROW_DTYPE)
    late["id"] = [7]
    cols, n, changed = apply_delta(child, late)
    assert changed is None and cols["id"][:n].tolist() == [1, 5, 7, 9, 12]


def test_snapshot_version_never_names_a_write_its_rows_miss(pg_schema_url: str, tmp_path: Path) -> None:
    """A write that commits while the index refreshes (between reading the delta rows and any later
    statement) must not be marked as loaded: the snapshot's version comes from the rows it read, so the
    next request still fetches that write. (Stamping the snapshot with a separate ``SELECT MAX(row_version)``
    lost such a write for good: the markers then matched the snapshot.)"""
    from sqlalchemy import event

    app = create_app(make_settings(pg_schema_url, tmp_path))
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json("A/1")]})
        post = lambda tag, k: client.post(  # noqa: E731
            "/v1/experiences", json={"items": [experience_json("A/1", f"{tag} {i}", pass_rate=0.5) for i in range(k)]}
        ).raise_for_status()
        post("first", 3)
        assert client.post("/v1/sample", json={"n": 2}).json()["population"] == 3  # full load
        post("second", 2)
        index: PriorityIndex = app.state.buffer.index
        engine = app.state.buffer.engine
        fired: list[bool] = []

        def write_in_between(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not fired and "buffer_state" not in statement:
                fired.append(True)
                post("racing", 2)  # commits on another connection, mid-refresh

        with engine.connect() as conn:
            event.listen(conn, "before_cursor_execute", write_in_between)
            snap = index.current(conn)
            event.remove(conn, "before_cursor_execute", write_in_between)
            conn.rollback()
        if not fired:  # this refresh ran no other statement after the markers: the write lands just after it
            post("racing", 2)
        assert snap.n == 5
        with engine.connect() as conn:
            assert index.current(conn).n == 7
        assert client.post("/v1/sample", json={"n": 2}).json()["population"] == 7
