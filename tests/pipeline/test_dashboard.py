"""``btp dashboard``: its read API over run folders and a live buffer service (with the token), and the page
in headless Chromium (Playwright) while a tiny embedded run goes: no console errors, the charts show the
API's numbers, and the page updates.

The browser test needs Debian's ``chromium`` and the ``playwright`` package (``bash deploy/install.sh dev``
installs both where it can); without them it is skipped and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.client import BufferClient
from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate, SampleRequest, TaskIn
from services.pipeline.cli.stack import free_port
from services.pipeline.settings import Settings

TOKEN = "dash-token"
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Server:
    """A uvicorn server for an app in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def buffer_service(tmp_path: Path) -> Iterator[Server]:
    from services.buffer.app import create_app
    from services.buffer.settings import Settings as BufferSettings

    server = Server(create_app(BufferSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite3'}",
                                              data_dir=tmp_path, api_token=TOKEN)))  # fmt: skip
    yield server
    server.stop()


def fill_buffer(url: str) -> BufferClient:
    """Two rounds of programs from two sources, judged, and two minibatches drawn."""
    client = BufferClient(url, token=TOKEN)
    tests = {"kind": "check", "entry_point": "f", "code": "def check(candidate):\n    assert candidate() == 1\n"}
    client.upsert_tasks([TaskIn.model_validate({"id": f"d/{i}", "dataset": "demo", "split": "train",
                                                 "prompt": "def f():\n", "tests": tests}) for i in range(3)])
    items = [ExperienceIn(task_id=f"d/{i % 3}", program=f"    return {i}\n", logprob=-0.5 * (i + 1), token_count=4,
                          source="student@base" if i < 4 else "teacher", round=1 + i % 2) for i in range(7)]
    ids = client.add_experiences(items).ids
    for j, eid in enumerate(ids):
        client.update_experience(eid, ExperienceUpdate(pass_rate=[0.0, 0.5, 1.0][j % 3]))
    for seed in (1, 2):
        client.sample(SampleRequest(n=4, scheme="rank", alpha=0.5, split="train", seed=seed))
    return client


# A run's process that dies without a word (killed, out of memory): it starts its progress as `btp run` does,
# says so, and exits hard when told to (os._exit: no handler, no finally, like SIGKILL).
DYING_RUN = """
import os, sys
from pathlib import Path
from services.pipeline.run.config import RunConfig
from services.pipeline.run.folder import RunFolder
from services.pipeline.run.progress import FolderReporter
from services.pipeline.run.steps import SilentReporter

cfg = RunConfig.model_validate({"name": sys.argv[2], "model": "tiny", "datasets": ["mbpp"]})
folder = RunFolder.create(Path(sys.argv[1]), cfg)
reporter = FolderReporter(SilentReporter(), folder.path / "progress.json", heartbeat_s=0.2)
reporter.start()
reporter.phase("held by a process about to die", 4)
reporter.advance(1)
print("started", flush=True)
sys.stdin.readline()
os._exit(9)
"""


class DyingRun:
    """A run folder whose process is alive until :meth:`kill`."""

    def __init__(self, runs_dir: Path, name: str) -> None:
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen([sys.executable, "-c", DYING_RUN, str(runs_dir), name], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "started"

    def kill(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("die\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 9


def dashboard(data_dir: Path, buffer_url: str | None) -> Any:
    from services.pipeline.dashboard.app import create_app

    return create_app(Settings(data_dir=data_dir, buffer_url=buffer_url, api_token=TOKEN))


def test_read_endpoints_and_api(tmp_path: Path, buffer_service: Server, tiny_model: Path, data_dir: Path) -> None:
    from fastapi.testclient import TestClient

    client = fill_buffer(buffer_service.url)
    groups = client.stats_groups().groups
    assert [(g.round, g.source, g.experiences) for g in groups] == [
        (1, "student@base", 2), (1, "teacher", 2), (2, "student@base", 2), (2, "teacher", 1)]
    assert all(g.judged == g.experiences for g in groups)
    recent = client.recent_samples(5).items
    assert [d.seq for d in recent] == [1, 2] and all(len(d.p2values) == 4 and d.population == 7 for d in recent)
    assert httpx.get(f"{buffer_service.url}/v1/samples/recent").status_code == 401  # same auth

    from services.pipeline.cli.main import execute
    from services.pipeline.run.config import RunConfig

    cfg = RunConfig.model_validate({"name": "d1", "model": str(tiny_model), "datasets": ["mbpp"], "train_size": 2,
                                    "test_size": 2, "rounds": 1, "k": 2, "max_new_tokens": 8, "n": 2, "steps": 1,
                                    "prompt_format": "raw"})  # fmt: skip
    execute(cfg, None, Settings(), quiet=True)
    with TestClient(dashboard(data_dir, buffer_service.url)) as http:
        assert http.get("/").status_code == 200 and http.get("/static/charts.js").status_code == 200
        assert http.get("/api/runs").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        runs = http.get("/api/runs", headers=auth).json()["runs"]
        assert [r["name"] for r in runs] == ["d1"] and runs[0]["finished_at"] and runs[0]["embedded_buffer"]
        assert runs[0]["status"] == "finished" and runs[0]["progress"]["status"] == "finished"
        assert runs[0]["progress"]["phases"][-1]["name"] == "evaluation after round 1"
        run = http.get("/api/runs/d1", headers=auth).json()
        assert [r["round"] for r in run["rounds"]] == [0, 1] and run["rounds"][1]["loss_history"]
        assert run["buffer"]["stats"]["experiences"] == sum(g["experiences"] for g in run["buffer"]["groups"])
        assert http.get("/api/runs/nope", headers=auth).status_code == 404
        services = http.get("/api/services", headers=auth).json()
        assert services["generator"] == {"url": None, "health": None}
        assert services["buffer"]["health"]["ok"] and len(services["buffer"]["buffer"]["recent"]) == 2


def test_a_run_is_running_only_while_its_process_lives(tmp_path: Path, tiny_model: Path, data_dir: Path) -> None:
    """Failed (an exception), stopped (the process died without a word) and running (alive) runs, as the
    dashboard's API reports them; a finished run is covered above."""
    from fastapi.testclient import TestClient

    from services.pipeline.cli.main import execute
    from services.pipeline.run.config import RunConfig

    closed = free_port()  # nothing listens there: the teacher's first request fails inside the run
    cfg = RunConfig.model_validate({"name": "broken", "model": str(tiny_model), "datasets": ["mbpp"], "train_size": 2,
                                    "test_size": 2, "rounds": 1, "k": 2, "max_new_tokens": 8, "n": 2, "steps": 1,
                                    "prompt_format": "raw", "teacher": {"kind": "openai", "model": "t",
                                                                        "url": f"http://127.0.0.1:{closed}/v1"}})
    with pytest.raises(httpx.ConnectError):
        execute(cfg, None, Settings(), quiet=True)
    dying = DyingRun(Settings().runs_dir(), "dying")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(dashboard(data_dir, None)) as http:
        def status() -> dict[str, Any]:
            return {r["name"]: (r["status"], (r["progress"] or {}).get("error")) for r in
                    http.get("/api/runs", headers=auth).json()["runs"]}

        now = status()
        assert now["dying"] == ("running", None)
        assert now["broken"][0] == "failed" and "ConnectError" in now["broken"][1]
        dying.kill()
        assert status()["dying"] == ("stopped", None)  # its process is gone, though its file says running
        before = (data_dir / "runs" / "dying" / "progress.json").read_text()
        time.sleep(0.5)  # no heartbeat any more
        assert (data_dir / "runs" / "dying" / "progress.json").read_text() == before


def test_run_status_from_the_heartbeat_alone() -> None:
    """A run on another host (a container): only the heartbeat's age tells."""
    from services.pipeline.run.progress import STALE_S, run_status

    beat = {"status": "running", "pid": 1, "host": "elsewhere", "heartbeat_s": 5.0, "updated_at": 1000.0}
    assert run_status(None, beat, now=1000.0 + STALE_S - 1) == "running"
    assert run_status(None, beat, now=1000.0 + STALE_S + 1) == "stopped"
    assert run_status("2026-01-01T00:00:00", beat, now=1e9) == "finished"
    assert run_status(None, None) == "not started"  # created, never started (a sweep's runs wait their turn)
    assert run_status(None, {"phase": "x", "updated_at": 1000.0}, now=1001.0) == "stopped"  # a run from before statuses
    assert run_status(None, beat | {"status": "interrupted"}, now=1000.0) == "interrupted"


def _browser() -> tuple[Any, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; deploy/install.sh dev does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the dev extra)")
    return sync_playwright, chromium


def _numbers(page: Any, selector: str) -> list[tuple[str, str, float]]:
    return [(e.get_attribute("data-series"), e.get_attribute("data-x"), float(e.get_attribute("data-y")))
            for e in page.query_selector_all(selector)]


def _options(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#run-select option", "os => os.map((o) => o.text)"))


def test_dashboard_in_chromium_while_a_run_goes(tmp_path: Path, buffer_service: Server, tiny_model: Path,
                                                data_dir: Path) -> None:
    sync_playwright, chromium = _browser()
    from services.pipeline.cli.main import execute
    from services.pipeline.run.config import RunConfig

    client = fill_buffer(buffer_service.url)
    dying = DyingRun(Settings().runs_dir(), "crashed")  # another run, whose process will die
    server = Server(dashboard(data_dir, buffer_service.url))
    cfg = RunConfig.model_validate({"name": "live", "model": str(tiny_model), "datasets": ["mbpp"], "train_size": 3,
                                    "test_size": 3, "rounds": 2, "k": 2, "max_new_tokens": 16, "n": 2, "steps": 2,
                                    "prompt_format": "raw"})  # fmt: skip
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            execute(cfg, None, Settings(), quiet=True)
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    errors: list[str] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # ?run=live: the page shows that run as soon as it exists, though another one is there first
            page.goto(f"{server.url}/?interval=400&run=live#token={TOKEN}")
            page.wait_for_function("Number(document.getElementById('refreshes').dataset.count) >= 1")
            # services: the buffer service is up; the others are embedded
            assert page.get_attribute("[data-service=buffer]", "data-state") == "ok"
            assert page.get_attribute("[data-service=generator]", "data-state") == "off"
            # buffer charts show the service's numbers
            groups = httpx.get(f"{server.url}/api/services", headers=auth).json()["buffer"]["buffer"]["groups"]
            bars = _numbers(page, "#chart-groups rect.bar")
            shown = {(s, x): y for s, x, y in bars if y}
            assert shown == {(g["source"], f"round {g['round']}"): g["experiences"] for g in groups}
            assert len(page.query_selector_all("#chart-recent circle[data-series='mean P2Value']")) == 2
            # the run starts while the page watches: phases appear and the curves follow the run folder
            thread = threading.Thread(target=drive, daemon=True)
            thread.start()
            phases: set[str] = set()
            labels: set[str] = set()
            deadline = time.monotonic() + 600
            while thread.is_alive() and time.monotonic() < deadline:
                node = page.query_selector("#phase-now")
                if node is not None and "about to die" not in node.inner_text():
                    phases.add(node.inner_text())
                labels.update(_options(page))
                time.sleep(0.2)
            thread.join(5)
            assert not failure, failure
            # while it went, the run was "running" (from its folder's creation on: never "stopped" while the
            # model loaded); the other run's process is still alive, so it is running too
            assert page.eval_on_selector("#run-select", "s => s.value") == "live"  # ?run=live, once it existed
            assert "live (running)" in labels and not {"live (stopped)", "live (not started)"} & labels, labels
            options = "[...document.querySelectorAll('#run-select option')].map((o) => o.text)"
            page.wait_for_function(f"{options}.includes('crashed (running)')", timeout=120_000)
            dying.kill()
            client.sample(SampleRequest(n=4, scheme="rank", alpha=0.5, split="train", seed=3))  # another minibatch
            # the page updates: the new minibatch appears (however many polls were in flight before it)
            page.wait_for_function("document.querySelectorAll(\"#chart-recent circle[data-series='mean P2Value']\")"
                                   ".length === 3", timeout=120_000)
            page.wait_for_function(f"{options}.includes('crashed (stopped)')", timeout=120_000)
            run = httpx.get(f"{server.url}/api/runs/live", headers=auth).json()
            points = _numbers(page, "#chart-eval circle.point")
            expected = [("pass rate", str(r["round"]), r["eval"]["pass_rate"]) for r in run["rounds"]] + \
                       [("accuracy", str(r["round"]), r["eval"]["accuracy"]) for r in run["rounds"]]
            assert [p[:2] for p in sorted(points)] == [e[:2] for e in sorted(expected)] and len(points) == 6
            assert [p[2] for p in sorted(points)] == pytest.approx([e[2] for e in sorted(expected)])
            losses = [p["loss"] for r in run["rounds"] for p in r["loss_history"]]
            assert [y for _, _, y in _numbers(page, "#chart-run-loss circle.point")] == pytest.approx(losses)
            # the page followed the run through several phases (the page polls: a short phase such as the
            # tiny model's beam search can fall between two polls on a loaded machine)
            assert len(phases) >= 3 and any("round" in p for p in phases), phases
            assert page.inner_text("#phase-now") == "finished"
            # the picker: the finished run is not "(running)" any more, the dead one says it stopped
            options = _options(page)
            assert sorted(options) == ["crashed (stopped)", "live"], options
            if os.environ.get("BTP_DASHBOARD_SCREENSHOTS"):  # refresh the README's picture
                page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    # the host's network changing under the browser (another process adding a container bridge) fails a poll
    # or two with net::ERR_NETWORK_CHANGED; the page retries on its next poll: not an error of the page
    assert [e for e in errors if "net::ERR_NETWORK_CHANGED" not in e] == []
