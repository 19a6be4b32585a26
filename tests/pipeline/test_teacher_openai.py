"""``btp run --teacher-openai-url`` against our own generator's OpenAI-compatible routes, over real HTTP
(uvicorn on a free port), end to end: the teacher's programs land in the buffer with the log-probabilities
the generator reports for them, get judged, and train the student."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from services.pipeline.cli.main import app
from services.pipeline.cli.stack import free_port
from services.pipeline.run.folder import RunFolder
from services.pipeline.settings import Settings


@pytest.fixture
def teacher_url(tiny_model: Path, tmp_path: Path) -> Iterator[str]:
    """The generator serving the tiny model over HTTP, as a teacher would run elsewhere."""
    import uvicorn

    from services.generator.app import create_app
    from services.generator.settings import Settings as GeneratorSettings

    gs = GeneratorSettings(model=str(tiny_model), data_dir=tmp_path / "teacher", device="cpu", torch_threads=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(gs), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("teacher generator did not start")
        time.sleep(0.2)
    yield f"{url}/v1"
    server.should_exit = True
    thread.join(30)


def test_teacher_run_through_openai_endpoint(tiny_model: Path, data_dir: Path, teacher_url: str) -> None:
    model_id = httpx.get(f"{teacher_url}/models").json()["data"][0]["id"]
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--name", "oai", "--model", str(tiny_model), "--train-size", "3",
                                 "--test-size", "2", "--k", "2", "--max-new-tokens", "12", "--n", "2", "--steps", "1",
                                 "--rounds", "1", "--prompt-format", "raw", "--teacher-openai-url", teacher_url,
                                 "--teacher-model", model_id])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = RunFolder.open(Settings().runs_dir(), "oai")
    assert folder.state().done == ["eval:0", "sample:1", "judge:1", "train:1", "eval:1"]
    with sqlite3.connect(folder.path / "buffer.sqlite3") as conn:
        rows = conn.execute("SELECT task_id, program, source, pass_rate, logprob, token_count FROM experiences").fetchall()
    assert 3 <= len(rows) <= 6 and {r[2] for r in rows} == {f"openai:{model_id}"}
    assert all(r[3] is not None for r in rows)  # judged
    assert all(r[4] <= 0 and r[5] >= 0 for r in rows)
    metrics = folder.metrics()
    assert metrics[1]["train"]["loss_history"] and metrics[1]["eval"]["tasks"] == 2



def test_programs_with_nul_are_dropped() -> None:
    from services.common.schemas.buffer import TaskIn
    from services.pipeline.run.steps import experiences

    task = TaskIn.model_validate({"id": "t/1", "dataset": "d", "split": "train", "prompt": "p",
                                  "tests": {"kind": "stdio", "cases": [{"input": "", "output": ""}]}})
    items = experiences([task], [[("ok", -1.0, 1), ("bad\0", -2.0, 2)]], source="s", round_=1,
                        generation=lambda t: "g")
    assert [i.program for i in items] == ["ok"]
