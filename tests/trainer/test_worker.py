"""A real Celery worker process on the real Redis (DB 5) and PostgreSQL.

- SIGKILL mid-job: the task is delivered again (short visibility timeout), the job resumes from its last
  checkpoint, finishes, and every checkpoint on disk is complete and loadable.
- Bad jobs end ``failed`` with a clear message and the same worker goes on serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.client import BufferClient
from services.trainer import checkpoint as ckpt
from services.trainer.app import create_app
from services.trainer.settings import Settings

from .helpers import _stop, buffer_service, fill_buffer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env.update(
        PYTHONPATH=str(ROOT),
        BTP_DATABASE_URL=str(settings.database_url),
        BTP_REDIS_URL=settings.redis_url,
        BTP_DATA_DIR=str(settings.data_dir),
        BTP_BUFFER_URL=str(settings.buffer_url),
        BTP_MODEL_ROOTS=os.environ.get("BTP_MODEL_ROOTS", ""),
        BTP_TRAINER_DEVICE="cpu",
        BTP_TRAINER_QUEUE=settings.queue,
        BTP_TRAINER_VISIBILITY_TIMEOUT_S="3",
        BTP_TRAINER_RESTORE_THROTTLE="1",
        OMP_NUM_THREADS="1",
    )
    return env


@contextmanager
def worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A services.trainer.worker worker --pool=solo`` in its own process group."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "services.trainer.worker", "worker", "--pool=solo",
        "--concurrency=1", "-Q", settings.queue, "--loglevel=INFO", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-n", f"trainer-test-{time.monotonic_ns()}@%h",
    ]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(settings), stdout=fh, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        _stop(proc)


def _wait(pred: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{log.read_text()[-4000:]}")


@pytest.fixture()
def stack(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Settings, TestClient]]:
    """Trainer settings + API client; the buffer service (its own process) filled with experiences."""
    with buffer_service(pg_url, tmp_path, tmp_path / "buffer.log") as buffer_url:
        with BufferClient(buffer_url) as client:
            fill_buffer(client)
        # a queue of this test's own: a worker left over from an interrupted run can never take its jobs
        queue = f"btp-train-test-{uuid.uuid4().hex[:12]}"
        settings = Settings(database_url=pg_url, redis_url=redis_url, data_dir=tmp_path, device="cpu", queue=queue,
                            buffer_url=buffer_url)  # fmt: skip
        with TestClient(create_app(settings)) as api:
            yield settings, api


def _job(model: Path, **kw: Any) -> dict[str, Any]:
    return {
        "model": str(model), "batch_size": 4, "micro_batch_size": 2, "steps": 5, "learning_rate": 1e-3,
        "checkpoint_every": 5, "sample": {"dataset": "toy"}, **kw,
    }


def test_sigkilled_worker_job_is_redelivered_and_resumes(
    stack: tuple[Settings, TestClient], tiny_llama: Path, tmp_path: Path
) -> None:
    settings, api = stack
    log = tmp_path / "worker.log"
    job = api.post("/v1/jobs", json=_job(tiny_llama, steps=40, checkpoint_every=4)).json()
    url = f"/v1/jobs/{job['id']}"
    with worker(settings, log) as first:
        _wait(lambda: api.get(url).json()["progress"]["step"] >= 10, 180, "step 10", log)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    killed = api.get(url).json()
    assert killed["status"] == "running" and killed["progress"]["step"] < 40
    assert killed["attempts"] == 1
    with worker(settings, log):
        done = _wait(
            lambda: (j := api.get(url).json())["status"] in ("succeeded", "failed") and j, 180, "job end", log
        )
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    resumed = done["resumed_from_step"]
    assert resumed is not None and resumed % 4 == 0 and 8 <= resumed <= killed["progress"]["step"]
    assert [p["step"] for p in done["loss_history"]] == list(range(1, 41))
    out = settings.resolved_checkpoints_dir() / job["id"]
    assert done["checkpoint"] == str(out / "step-40")
    # Every checkpoint is whole: nothing half-written is left, each one loads with its state.
    from transformers import AutoModelForCausalLM

    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    steps = [c.step for c in ckpt.list_checkpoints(out)]
    assert steps == list(range(4, 41, 4))
    for c in ckpt.list_checkpoints(out):
        assert ckpt.load_trainer_state(c.path)["step"] == c.step
        AutoModelForCausalLM.from_pretrained(c.path)


def test_bad_jobs_fail_clearly_and_the_worker_keeps_serving(
    stack: tuple[Settings, TestClient], tiny_llama: Path, tiny_gpt2: Path, tmp_path: Path
) -> None:
    settings, api = stack
    log = tmp_path / "worker.log"
    lora_gpt2 = api.post("/v1/jobs", json=_job(tiny_gpt2, lora=True)).json()["id"]
    empty = api.post("/v1/jobs", json=_job(tiny_llama, sample={"dataset": "nothing-here"})).json()["id"]
    good = api.post("/v1/jobs", json=_job(tiny_llama)).json()["id"]
    cancelled = api.post("/v1/jobs", json=_job(tiny_llama)).json()["id"]
    assert api.post(f"/v1/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
    with worker(settings, log):
        _wait(lambda: api.get(f"/v1/jobs/{good}").json()["status"] == "succeeded", 180, "good job", log)
        # A running job asked to cancel stops at its next step and keeps a checkpoint of where it was.
        long = api.post("/v1/jobs", json=_job(tiny_llama, steps=5000, checkpoint_every=1000)).json()["id"]
        _wait(lambda: api.get(f"/v1/jobs/{long}").json()["progress"]["step"] >= 3, 180, "long job running", log)
        asked = api.post(f"/v1/jobs/{long}/cancel").json()
        assert asked["status"] == "running" and asked["cancel_requested"] is True
        stopped = _wait(
            lambda: (j := api.get(f"/v1/jobs/{long}").json())["status"] == "cancelled" and j, 60, "cancel", log
        )
    assert stopped["progress"]["step"] < 5000
    assert stopped["checkpoint"] == str(settings.resolved_checkpoints_dir() / long / f"step-{stopped['progress']['step']}")
    jobs = {j["id"]: j for j in api.get("/v1/jobs").json()["items"]}
    assert jobs[lora_gpt2]["status"] == "failed" and "LoRA cannot be applied" in jobs[lora_gpt2]["error"]
    assert jobs[empty]["status"] == "failed" and "no eligible experiences" in jobs[empty]["error"]
    assert jobs[good]["status"] == "succeeded" and jobs[good]["progress"]["step"] == 5
    assert jobs[cancelled]["status"] == "cancelled" and jobs[cancelled]["attempts"] == 0
