"""`btp run --async` against a buffer service, the trainer API and a real Celery worker (PostgreSQL, Redis):
the worker is SIGKILLed while it trains a version and another one is started; the run ends with its whole
budget trained, one job per version, every program stored once and judged before it is trained, and the
lag of every trained program read off the trainer API's loss history."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.pipeline.run.folder import RunFolder

from .test_async import SMALL, _serve

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = "redis://127.0.0.1:6379/7"
pytestmark = pytest.mark.integration  # starts real processes


@pytest.fixture
def fresh_db() -> Iterator[str]:
    import psycopg

    name = f"btp_async_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`btp worker` (Celery, one job at a time) in its own process group."""
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "services.pipeline.cli.main", "worker"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_killed_trainer_worker_is_replaced_nothing_lost_or_duplicated(
    tiny_model: Path, data_dir: Path, tmp_path: Path, fresh_db: str
) -> None:
    import redis

    from services.pipeline.cli.stack import free_port

    redis.Redis.from_url(REDIS_DB).flushdb()
    ports = {"buffer": free_port(), "trainer": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")} | {
        "BTP_DATA_DIR": str(data_dir), "BTP_DATABASE_URL": fresh_db, "BTP_REDIS_URL": REDIS_DB,
        "BTP_TRAINER_QUEUE": f"btp-async-{uuid.uuid4().hex[:8]}", "BTP_TRAINER_DEVICE": "cpu",
        "BTP_TRAINER_VISIBILITY_TIMEOUT_S": "3", "BTP_TRAINER_RESTORE_THROTTLE": "1", "OMP_NUM_THREADS": "1",
        "BTP_MODEL_ROOTS": f"{data_dir},{tiny_model.parent}", "BTP_BUFFER_URL": urls["buffer"],
    }  # fmt: skip
    procs: list[subprocess.Popen[Any]] = []
    log = tmp_path / "worker.log"
    run: subprocess.Popen[str] | None = None
    try:
        procs.append(_serve("buffer", ports["buffer"], env))
        procs.append(_serve("trainer", ports["trainer"], env))
        first = _worker(env, log)
        procs.append(first)
        run_env = env | {"BTP_TRAINER_URL": urls["trainer"], "BTP_SERVICE_RETRY_S": "2"}
        cmd = [sys.executable, "-m", "services.pipeline.cli.main", "run", "--async", "--name", "killworker",
               "--model", str(tiny_model), *SMALL, "--steps", "6", "--budget", "36", "--max-lag", "1", "--json"]  # fmt: skip
        run = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        http = httpx.Client(timeout=30)
        killed_job = None
        deadline = time.monotonic() + 400
        while killed_job is None and run.poll() is None and time.monotonic() < deadline:
            for job in http.get(f"{urls['trainer']}/v1/jobs").json()["items"]:
                if job["status"] == "running" and job["progress"]["step"] >= 2:
                    killed_job = job
            if killed_job is None:
                time.sleep(0.1)
        if run.poll() is not None:
            pytest.fail("the run ended before a job ran:\n" + run.communicate()[0][-4000:])
        assert killed_job is not None, log.read_text()[-3000:]
        _kill_group(first)  # a crash mid-job: the task was never acknowledged
        after_kill = http.get(f"{urls['trainer']}/v1/jobs/{killed_job['id']}").json()
        assert after_kill["status"] == "running" and after_kill["progress"]["step"] < 6
        procs.append(_worker(env, log))  # the replacement (a restart policy's job in a deployment)
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output + log.read_text()[-3000:]
        jobs = http.get(f"{urls['trainer']}/v1/jobs").json()["items"]
        experiences = http.get(f"{urls['buffer']}/v1/experiences", params={"limit": 1000}).json()["items"]
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc) if proc.args[-1] == "worker" else proc.kill()

    folder = RunFolder.open(data_dir / "runs", "killworker")
    state = folder.state()
    assert state.finished_at and state.trained_programs == 36 and state.version == 3
    # one job per version, none sent twice; the killed one ran again as attempt 2 and succeeded
    assert len(jobs) == 3 and all(j["status"] == "succeeded" for j in jobs)
    by_job = {j["id"]: j for j in jobs}
    assert by_job[killed_job["id"]]["attempts"] == 2
    assert sorted(j["attempts"] for j in jobs) == [1, 1, 2]
    # every program stored once, judged, stamped with the version that sampled it
    assert experiences and all(e["pass_rate"] is not None and e["weights_version"] is not None for e in experiences)
    assert len({(e["task_id"], e["program"], e["source"]) for e in experiences}) == len(experiences)
    by_id = {e["id"]: e for e in experiences}
    info = json.loads((folder.path / "metrics" / "async.json").read_text())
    assert [v["version"] for v in info["versions"]] == [1, 2, 3]
    for rec in info["versions"]:
        points = rec["loss"]
        assert [p["step"] for p in points] == list(range(1, 7))  # the resumed job's steps, each once
        for point in points:
            assert point["experience_ids"] and len(point["weights_versions"]) == len(point["experience_ids"])
            for eid, wv in zip(point["experience_ids"], point["weights_versions"], strict=True):
                # lag >= 0; older programs stay replayable (max_lag bounds sampling, not replay)
                assert wv == by_id[eid]["weights_version"] and rec["version"] - 1 - wv >= 0
        # the lag comes from the trainer API's loss history: reported, not None, for a remote trainer
        assert rec["lag"]["programs"] == 12 and rec["lag"]["max"] is not None
    # judged before trained: the step that drew a program ran after its verdict
    for rec in info["versions"]:
        for point in rec["loss"]:
            assert all(_ts(by_id[eid]["judged_at"]) <= point["at"] for eid in point["experience_ids"])
