"""Fixtures for the judge tests: real bubblewrap containers, explicit settings, leftover checks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.judge.app import create_app
from services.judge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# a value the sandbox must never see: set in this (the service's) environment before any container starts
SECRET_ENV = ("BTP_JUDGE_TEST_SECRET", "hunter2-" + os.urandom(4).hex())
os.environ[SECRET_ENV[0]] = SECRET_ENV[1]


def unique_uid_base() -> int:
    """Per-session uids, so parallel test sessions on this host never share a sandbox uid."""
    return 200_000 + (os.getpid() % 50_000) * 8


def make_settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "workers": 2,
        "uid_base": unique_uid_base(),
        "time_s": 1.0,
        "max_time_s": 5.0,
        "max_cpu_s": 5.0,
        "memory_mb": 256,
        "max_memory_mb": 1024,
        "output_kb": 256,
        "max_output_kb": 4096,
        "processes": 16,
        "max_processes": 64,
        "api_token": None,
    }
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def children(pid: int) -> list[int]:
    """Direct children of a process (all threads), from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split())
    return out


def descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        nxt = [c for p in frontier for c in children(p)]
        out.extend(nxt)
        frontier = nxt
    return out


def processes_of_uids(uids: range) -> list[int]:
    """Host pids whose real uid is in ``uids`` (programs run as uid_base + i)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) in uids:
                found.append(int(p))
    return found


def leftovers(client: TestClient) -> list[str]:
    """Anything left running in the containers beyond bwrap's init and the harness."""
    judge = client.app.state.judge  # type: ignore[attr-defined]
    problems = []
    for box in judge.pool.boxes:
        if box.pid is None:
            problems.append(f"box {box.index} not running")
            continue
        extra = descendants(box.pid)
        if len(extra) > 4:  # bwrap's init, the harness, its zygote and (once started) the long-lived checker
            problems.append(f"box {box.index}: {len(extra)} processes under bwrap {box.pid}")
    settings: Settings = judge.settings
    stray = processes_of_uids(range(settings.uid_base, settings.uid_base + judge.pool.size))
    if stray:
        problems.append(f"processes still running as sandbox uids: {stray}")
    return problems


def check_tests(*asserts: str, entry: str = "f") -> dict[str, Any]:
    body = "".join(f"    assert {a}\n" for a in asserts)
    return {"kind": "check", "entry_point": entry, "code": "def check(candidate):\n" + body}


def judge(client: TestClient, program: str, tests: dict[str, Any], limits: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"program": program, "tests": tests}
    if limits:
        body["limits"] = limits
    r = client.post("/v1/judge", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_serving(client: TestClient) -> None:
    """The service still answers and still judges a correct program as passed."""
    assert client.get("/health").json()["status"] == "ok"
    res = judge(client, "def f(x):\n    return x + 1\n", check_tests("candidate(1) == 2", "candidate(2) == 3"))
    assert res["verdict"] == "passed", res
