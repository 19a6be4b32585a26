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


def _rule_settings(tmp_path: Path, redis_url: str, **kw: Any) -> Settings:
    """Settings whose only model roots are the defaults under ``tmp_path/data`` (no BTP_MODEL_ROOTS)."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'rules.sqlite3'}", redis_url=redis_url,
                    data_dir=tmp_path / "data", model_roots=[], **kw)  # fmt: skip


def test_model_only_a_known_name_or_a_folder_under_the_roots(tmp_path: Path, tiny_llama: Path, redis_url: str) -> None:
    """Issue 14: any host folder with a config.json was a model, and answers told which exist."""
    import shutil

    data = tmp_path / "data"
    inside = data / "models" / "tiny"
    shutil.copytree(tiny_llama, inside)
    (data / "checkpoints").mkdir(parents=True)
    (data / "checkpoints" / "escape").symlink_to(tiny_llama, target_is_directory=True)
    outside = {
        str(tiny_llama): "a real model folder outside the roots",
        "/no/such/model": "a missing folder",
        "/etc": "a host folder without config.json",
        f"{data}/models/../..": "a parent of a root",
        str(data / "models" / ".." / ".." / tiny_llama.relative_to("/")): "dot-dot out of a root",
        str(data / "checkpoints" / "escape"): "a symlink inside a root pointing out",
        "models/tiny": "a relative path",
    }
    with TestClient(create_app(_rule_settings(tmp_path, redis_url))) as api:
        answers = set()
        for model, what in outside.items():
            r = api.post("/v1/jobs", json=_body(Path(model)))
            assert r.status_code == 422, (what, r.text)
            answers.add(r.text)
        assert len(answers) == 1, answers  # one answer whatever exists on the host
        assert json.loads(answers.pop())["error"]["param"] == "model"
        assert api.get("/v1/jobs").json()["items"] == []
        ok = api.post("/v1/jobs", json=_body(inside))
        assert ok.status_code == 201, ok.text
        assert api.post("/v1/jobs", json={**_body(inside), "model": "SmolLM2-135M-Instruct"}).status_code == 201


def test_job_urls_only_the_configured_ones_or_the_allow_list(tmp_path: Path, tiny_llama: Path, redis_url: str) -> None:
    settings = _rule_settings(tmp_path, redis_url, buffer_url="http://127.0.0.1:8003",
                              generator_url="http://gen.internal:8001", allowed_urls=["http://buffer-b.internal:9000"])  # fmt: skip
    import shutil

    shutil.copytree(tiny_llama, tmp_path / "data" / "models" / "tiny")
    model = tmp_path / "data" / "models" / "tiny"
    with TestClient(create_app(settings)) as api:
        for kw in ({"buffer_url": "http://127.0.0.1:8003/"}, {"buffer_url": "HTTP://127.0.0.1:8003"},
                   {"buffer_url": "http://buffer-b.internal:9000"}, {"generator_url": "http://gen.internal:8001"},
                   {}):  # fmt: skip
            r = api.post("/v1/jobs", json=_body(model, **kw))
            assert r.status_code == 201, (kw, r.text)
        for param, url in [("buffer_url", "http://127.0.0.1:9"), ("buffer_url", "http://127.0.0.1:8003@evil:80"),
                           ("buffer_url", "http://169.254.169.254/latest"), ("generator_url", "http://127.0.0.1:8003"),
                           ("buffer_url", "file:///etc"), ("generator_url", "http://gen.internal:8001/?x=1")]:  # fmt: skip
            r = api.post("/v1/jobs", json=_body(model, **{param: url}))
            assert r.status_code == 422 and r.json()["error"]["param"] == param, (url, r.text)


def test_worker_never_calls_a_url_the_job_names(tmp_path: Path, tiny_llama: Path) -> None:
    """A job stored with a buffer_url the worker is not configured with fails before any request: the
    listener it names sees no connection (it used to receive the worker's requests)."""
    import socket
    import threading

    from services.common.schemas.trainer import JobCreate
    from services.trainer import jobs
    from services.trainer.db import make_engine, make_sessionmaker
    from services.trainer.executor import execute_job

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    connections.append(conn.recv(4096))
                except OSError:
                    connections.append(b"")
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}", data_dir=tmp_path, device="cpu")
        factory = make_sessionmaker(make_engine(settings.resolved_database_url()))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        job = JobCreate(model=str(tiny_llama), batch_size=2, steps=1, buffer_url=url)
        with factory() as session:
            created = jobs.create_job(session=session, job=job)
        assert execute_job(created.id, settings, session_factory=factory) == "failed"
        with factory() as session:
            out = jobs.get_job(session=session, job_id=created.id)
        assert out.status == "failed" and "buffer_url" in (out.error or ""), out.error
        assert connections == []
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def test_nul_in_paths_and_bodies_on_postgresql(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """Issue 14: PostgreSQL refuses NUL in text, and these answered 500."""
    settings = Settings(database_url=pg_url, redis_url=redis_url, data_dir=tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        for method, url in [("GET", "/v1/jobs/%00"), ("GET", "/v1/jobs/a%00b"), ("POST", "/v1/jobs/%00/cancel")]:
            r = api.request(method, url)
            assert r.status_code == 422 and r.json()["error"]["param"] == "path", (url, r.text)
        for body, param in [({"model": "a\x00b"}, "model"), ({"model": "SmolLM2-135M-Instruct",
                            "sample": {"split": "\x00"}}, "sample.split")]:  # fmt: skip
            r = api.post("/v1/jobs", json=body)
            assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text
        assert api.get("/v1/jobs").status_code == 200
