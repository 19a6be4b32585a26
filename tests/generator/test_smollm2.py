"""End to end with the real SmolLM2-135M-Instruct weights through the HTTP API, and a real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.generator.app import create_app
from services.generator.settings import Settings

from .conftest import teacher_forced

ROOT = Path(__file__).resolve().parents[2]
PROMPT = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n'


def test_smollm2_beam_search_over_http(smol_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model="SmolLM2-135M-Instruct", model_cache_dir=smol_dir.parent, data_dir=tmp_path,
                        device="cpu", torch_threads=1)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health").json()
        assert health["model"] == "SmolLM2-135M-Instruct" and health["checkpoint"] == str(smol_dir)
        r = client.post("/v1/generate", json={"prompts": [PROMPT], "num_beams": 3, "max_new_tokens": 40})
        assert r.status_code == 200, r.text
        body = r.json()
        model = client.app.state.engine.current.model  # type: ignore[attr-defined]
    res = body["results"][0]
    cands = res["candidates"]
    assert 1 <= len(cands) <= 3 and len({c["text"] for c in cands}) == len(cands)
    for c in cands:
        ref = teacher_forced(model, res["prompt_token_ids"], c["token_ids"])
        assert abs(c["logprob"] - sum(ref)) < 1e-3
        assert 0.0 < c["probability"] <= 1.0 and "```" not in c["text"]
    best = cands[0]["text"]
    assert "return a + b" in best, best
    namespace: dict[str, Any] = {}
    exec(compile(best, "<candidate>", "exec"), namespace)  # the instruct model writes the whole function
    assert namespace["add"](2, 3) == 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_uvicorn_factory_starts(tiny_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "BTP_GENERATOR_MODEL": str(tiny_dir), "BTP_DATA_DIR": str(tmp_path),
           "BTP_GENERATOR_DEVICE": "cpu", "BTP_GENERATOR_TORCH_THREADS": "1", "BTP_API_TOKEN": "s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.generator.app:create_app", "--factory", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.5)
        # with a token set, /health shows its details only to a caller who sends it
        assert "checkpoint" not in httpx.get(f"{url}/health").json()
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/health", headers=auth).json()["checkpoint"] == str(tiny_dir)
        body = {"prompts": ["def f():"], "num_beams": 2, "max_new_tokens": 4}
        assert httpx.post(f"{url}/v1/generate", json=body).status_code == 401
        r = httpx.post(f"{url}/v1/generate", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"][0]["candidates"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
