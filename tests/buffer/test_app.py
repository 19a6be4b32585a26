"""App wiring: the embedded SQLite default, bearer-token auth, health and metrics, the lazily started
runtime (TestClient without the lifespan), and the settings' environment names."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.buffer.app import create_app
from services.buffer.settings import Settings

from .conftest import task_json


def test_embedded_default_is_a_sqlite_file_under_the_data_dir(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=None, api_token=None))
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok", "service": "buffer", "database": "sqlite"}
        assert client.post("/v1/tasks", json={"tasks": [task_json("E/1")]}).status_code == 200
    assert (tmp_path / "btp.sqlite3").exists()


def test_runtime_starts_without_the_lifespan(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", api_token=None))
    client = TestClient(app)  # no `with`: the lifespan does not run
    assert client.post("/v1/tasks", json={"tasks": [task_json("L/1")]}).json()["created"] == 1
    assert client.get("/v1/tasks/L%2F1").status_code == 200
    app.state.buffer.close()


def test_bearer_token_on_every_endpoint_but_health(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_token="s3cret"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        for method, path in (("get", "/v1/stats"), ("post", "/v1/sample"), ("get", "/metrics"), ("get", "/v1/tasks")):
            r = getattr(client, method)(path)
            assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        ok = client.get("/v1/stats", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["experiences"] == 0
        metrics = client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
        assert "btp_http_requests" in metrics


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BTP_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("BTP_BUFFER_MAX_SAMPLE_N", "7")
    monkeypatch.setenv("BTP_BUFFER_MAX_PROGRAM_BYTES", "100")
    settings = Settings()
    assert settings.max_sample_n == 7 and settings.max_program_bytes == 100
    assert settings.resolved_database_url().endswith("env.sqlite3")
    for name, field in Settings.model_fields.items():
        assert field.description, name
