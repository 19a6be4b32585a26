"""Idempotency under concurrent retries against real PostgreSQL: threads fire the same (overlapping)
batches at once at a real uvicorn running two worker processes; and threads against the in-process
app on both stores. No duplicate rows, every retry gets the same ids, created counts add up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.buffer.app import create_app

from .conftest import experience_json, make_settings, task_json

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def uvicorn_url(pg_schema_url: str, tmp_path: Path) -> Iterator[str]:
    """The buffer as a real uvicorn server (2 worker processes) on PostgreSQL."""
    port = free_port()
    env = {**os.environ, "BTP_DATABASE_URL": pg_schema_url, "BTP_DATA_DIR": str(tmp_path), "BTP_LOG_LEVEL": "WARNING"}
    env.pop("BTP_API_TOKEN", None)
    log = (tmp_path / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.buffer.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "uvicorn.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def batches(n_batches: int, size: int, overlap: int) -> list[list[dict[str, Any]]]:
    """Batches where consecutive ones share ``overlap`` programs."""
    out = []
    for b in range(n_batches):
        start = b * (size - overlap)
        out.append([experience_json(f"C/{i % 5}", f"program {i}", logprob=-1.0 - i % 7, source="m@0") for i in range(start, start + size)])
    return out


def hammer(post: Any, plan: list[list[dict[str, Any]]], threads_per_batch: int) -> list[tuple[int, dict[str, Any]]]:
    """Every batch sent by several threads released together; returns (batch index, response)."""
    jobs = [b for b in range(len(plan)) for _ in range(threads_per_batch)]
    barrier = threading.Barrier(len(jobs))

    def one(b: int) -> tuple[int, dict[str, Any]]:
        barrier.wait()
        r = post({"items": plan[b]})
        assert r.status_code == 200, r.text
        return b, r.json()

    with ThreadPoolExecutor(len(jobs)) as ex:
        return list(ex.map(one, jobs))


def check(results: list[tuple[int, dict[str, Any]]], plan: list[list[dict[str, Any]]], total_rows: int) -> None:
    by_program: dict[str, int] = {}
    for b, body in results:
        for item, eid in zip(plan[b], body["ids"], strict=True):
            assert by_program.setdefault(item["program"], eid) == eid  # same key, same id, every time
    unique = {item["program"] for batch in plan for item in batch}
    assert len(by_program) == len(unique) == total_rows
    assert len(set(by_program.values())) == len(unique)
    assert sum(body["created"] for _, body in results) == len(unique)


def test_concurrent_retries_real_uvicorn_postgres(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url, timeout=60) as http:
        assert http.post("/v1/tasks", json={"tasks": [task_json(f"C/{i}") for i in range(5)]}).status_code == 200
        plan = batches(4, 150, 50)

        def post(body: dict[str, Any]) -> httpx.Response:
            with httpx.Client(base_url=uvicorn_url, timeout=60) as c:
                return c.post("/v1/experiences", json=body)

        results = hammer(post, plan, threads_per_batch=3)
        total = http.get("/v1/experiences", params={"limit": 1}).json()["total"]
        check(results, plan, total)
        # and a sample served by either worker sees every row
        for _ in range(4):
            assert http.post("/v1/sample", json={"n": 8, "include_unjudged": True}).json()["population"] == total


def test_concurrent_retries_in_process(db_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(db_url, tmp_path))
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json(f"C/{i}") for i in range(5)]})
        plan = batches(3, 80, 30)

        def post(body: dict[str, Any]) -> Any:
            # one TestClient per request (a TestClient is not meant to be shared across threads)
            return TestClient(app).post("/v1/experiences", json=body)

        results = hammer(post, plan, threads_per_batch=3)
        total = client.get("/v1/experiences", params={"limit": 1}).json()["total"]
        check(results, plan, total)
