"""The trainer HTTP API on a real Redis (DB 5): validation, enqueue by name, cancel, errors, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

from services.trainer.app import create_app
from services.trainer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _body(model: Path, **kw: Any) -> dict[str, Any]:
    return {"model": str(model), "batch_size": 4, "steps": 2, "learning_rate": 1e-3, **kw}


def _queued_task_ids(url: str, queue: str = "btp-train") -> list[str]:
    r = redis.Redis.from_url(url)
    ids = [json.loads(m)["headers"]["id"] for m in r.lrange(queue, 0, -1)]
    r.close()
    return ids


def test_create_get_list_cancel(api: TestClient, tiny_llama: Path, redis_url: str) -> None:
    r = api.post("/v1/jobs", json=_body(tiny_llama, lora=True))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["progress"] == {"step": 0, "total_steps": 2}
    assert job["config"]["lora"] is True
    # Enqueued by task name with the job id, on the trainer queue.
    assert _queued_task_ids(redis_url) == [job["id"]]
    msg = json.loads(redis.Redis.from_url(redis_url).lrange("btp-train", 0, 0)[0])
    assert msg["headers"]["task"] == "btp.train"
    got = api.get(f"/v1/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["loss_history"] == []
    listed = api.get("/v1/jobs").json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert api.get("/v1/jobs", params={"status": "running"}).json()["items"] == []
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


def test_bad_jobs_are_4xx_and_change_nothing(api: TestClient, tiny_llama: Path, redis_url: str) -> None:
    cases = [
        (_body(Path("/no/such/model")), "model"),
        ({**_body(tiny_llama), "model": "GPT-17-Ultra"}, "model"),
        (_body(tiny_llama, learning_rate=-1e-3), "learning_rate"),
        (_body(tiny_llama, batch_size=0), "batch_size"),
        (_body(tiny_llama, micro_batch_size=8), "micro_batch_size"),
        (_body(tiny_llama, warmup_steps=5), "warmup_steps"),
        (_body(tiny_llama, sample={"scheme": "nope"}), "sample.scheme"),
        (_body(tiny_llama, buffer_url="file:///etc"), "buffer_url"),
        ({**_body(tiny_llama), "surprise": 1}, "surprise"),
    ]
    for body, param in cases:
        r = api.post("/v1/jobs", json=body)
        assert r.status_code == 422, (body, r.text)
        err = r.json()["error"]
        assert err["type"] == "validation_error" and err["param"] == param, err
    r = api.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"
    assert api.get("/v1/jobs").json()["items"] == []
    assert _queued_task_ids(redis_url) == []
    missing = api.get("/v1/jobs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert api.post("/v1/jobs/nope/cancel").status_code == 404


def test_broker_down_is_503_and_no_job_is_left(tmp_path: Path, tiny_llama: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite3'}", redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path
    )
    with TestClient(create_app(settings)) as api:
        r = api.post("/v1/jobs", json=_body(tiny_llama))
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
        assert api.get("/v1/jobs").json()["items"] == []


def test_too_many_active_jobs_is_429(tmp_path: Path, tiny_llama: Path, redis_url: str) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite3'}", redis_url=redis_url, data_dir=tmp_path,
        max_active_jobs=1,
    )
    with TestClient(create_app(settings)) as api:
        assert api.post("/v1/jobs", json=_body(tiny_llama)).status_code == 201
        r = api.post("/v1/jobs", json=_body(tiny_llama))
        assert r.status_code == 429 and r.json()["error"]["type"] == "overloaded"


def test_token_is_required_when_set(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite3'}", redis_url=redis_url, data_dir=tmp_path, api_token="s3"
    )
    with TestClient(create_app(settings)) as api:
        assert api.get("/v1/jobs").status_code == 401
        assert api.get("/v1/jobs", headers={"Authorization": "Bearer s3"}).status_code == 200
        assert api.get("/health").status_code == 200


def test_api_process_never_imports_torch(tmp_path: Path, tiny_llama: Path, redis_url: str) -> None:
    """Building the app and enqueueing a job loads neither torch nor the training code."""
    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from services.trainer.app import create_app
        from services.trainer.settings import Settings
        s = Settings(database_url="sqlite:///{tmp_path / 'x.sqlite3'}", redis_url="{redis_url}", data_dir="{tmp_path}")
        with TestClient(create_app(s)) as c:
            r = c.post("/v1/jobs", json={{"model": "{tiny_llama}", "steps": 1}})
            assert r.status_code == 201, r.text
            c.get("/v1/jobs")
        bad = [m for m in ("torch", "transformers", "peft", "services.trainer.training") if m in sys.modules]
        print("LOADED", bad)
        sys.exit(1 if bad else 0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
