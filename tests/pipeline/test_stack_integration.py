"""`btp stack up` on free ports (PostgreSQL, Redis, four services, a Celery worker as real processes), one
complete round driven over HTTP exactly as the README's curl calls do, then a clean SIGTERM shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.pipeline.cli.stack import free_port, port_open
from services.pipeline.datasets.loaders import load_mbpp, select

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _read_lines(proc: subprocess.Popen[str], sink: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line)


@pytest.fixture
def stack(tiny_model: Path, pg_url: str, tmp_path: Path) -> Any:
    ports = {name: free_port() for name in ("generator", "judge", "buffer", "trainer", "dashboard")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env |= {"BTP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", "BTP_JUDGE_WORKERS": "2"}
    queue = f"btp-test-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "stack", "up", "--model", str(tiny_model),
           "--database-url", pg_url, "--queue", queue, "--health-timeout", "400",
           *[a for name, port in ports.items() for a in (f"--{name}-port", str(port))]]  # fmt: skip
    # its own process group: a failed test still takes every service and worker down with it
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    deadline = time.monotonic() + 420
    while not any("stack ready" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("stack did not start:\n" + "".join(lines))
        time.sleep(0.5)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    yield urls, proc, lines
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `btp stack up` stops its children
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    return resp.json()


def test_one_round_over_http(stack: Any, tiny_model: Path, tmp_path: Path) -> None:
    urls, proc, lines = stack
    http = httpx.Client(timeout=120)
    for url in urls.values():
        assert _ok(http.get(f"{url}/health"))["status"] == "ok"
    tasks = select(load_mbpp().tasks, "train", 2)

    # 1. tasks into the buffer
    body = {"tasks": [t.model_dump(mode="json") for t in tasks]}
    assert _ok(http.post(f"{urls['buffer']}/v1/tasks", json=body))["created"] == 2
    # 2. beam search: k programs per task with their probabilities
    gen = _ok(http.post(f"{urls['generator']}/v1/generate", json={
        "prompts": [t.prompt for t in tasks], "mode": "beam", "num_beams": 2, "max_new_tokens": 12,
        "prompt_format": "raw"}))  # fmt: skip
    items = [{"task_id": tasks[r["prompt_index"]].id, "program": c["text"], "logprob": c["logprob"],
              "token_count": c["token_count"], "source": f"{gen['model']}@{gen['checkpoint']}", "round": 1,
              "generation": f"{tasks[r['prompt_index']].id}#1"}
             for r in gen["results"] for c in r["candidates"]]  # fmt: skip
    assert len(items) == 4
    ids = _ok(http.post(f"{urls['buffer']}/v1/experiences", json={"items": items}))["ids"]
    # 3. testing: judge every program, store its pass rate
    judged = _ok(http.post(f"{urls['judge']}/v1/judge/batch", json={"items": [
        {"program": tasks[[t.id for t in tasks].index(it["task_id"])].prompt + it["program"],
         "tests": tasks[[t.id for t in tasks].index(it["task_id"])].tests.model_dump(mode="json"),
         "limits": {"time_s": 2.0, "memory_mb": 512}} for it in items]}))["results"]  # fmt: skip
    assert all(r["total"] == 3 for r in judged)
    for exp_id, res in zip(ids, judged, strict=True):
        _ok(http.patch(f"{urls['buffer']}/v1/experiences/{exp_id}", json={"pass_rate": res["pass_rate"],
                                                                       "judge": {"verdict": res["verdict"]}}))  # fmt: skip
    # 4. PPER minibatch
    sample = {"n": 4, "scheme": "rank", "alpha": 0.5, "priority_exponent": 1.0, "possibility": "token_mean",
              "dataset": "mbpp", "split": "train", "seed": 1}  # fmt: skip
    drawn = _ok(http.post(f"{urls['buffer']}/v1/sample", json=sample))
    assert len(drawn["items"]) == 4 and drawn["population"] == 4
    # 5. fine-tune on PPER minibatches in the Celery worker, publish to the generator
    job = _ok(http.post(f"{urls['trainer']}/v1/jobs", json={
        "model": str(tiny_model), "batch_size": 2, "steps": 2, "learning_rate": 1e-3, "sample": sample,
        "publish_to_generator": True, "checkpoint_every": 2}))  # fmt: skip
    deadline = time.monotonic() + 300
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(1)
        job = _ok(http.get(f"{urls['trainer']}/v1/jobs/{job['id']}"))
    assert job["status"] == "succeeded", job
    assert job["checkpoint"] and len(job["loss_history"]) == 2 and job["published"] is True
    # 6. the generator now serves the new weights
    after = _ok(http.post(f"{urls['generator']}/v1/generate", json={
        "prompts": [tasks[0].prompt], "mode": "greedy", "max_new_tokens": 4, "prompt_format": "raw"}))  # fmt: skip
    assert after["checkpoint"] != gen["checkpoint"] and Path(job["checkpoint"]).name in after["checkpoint"]
    stats = _ok(http.get(f"{urls['buffer']}/v1/stats"))
    assert stats["judged"] == 4 and stats["datasets"]["mbpp"]["experiences"] == 4
    # the stack's dashboard reads the same services
    services = _ok(http.get(f"{urls['dashboard']}/api/services"))
    assert all(services[n]["health"]["ok"] for n in ("generator", "judge", "buffer", "trainer"))
    assert services["trainer"]["jobs"][0]["id"] == job["id"]
    assert services["trainer"]["jobs"][0]["loss_history"] == job["loss_history"]
    assert services["buffer"]["buffer"]["recent"][-1]["population"] == 4
    # bad input: a 4xx in the error envelope, never a 500
    bad = http.post(f"{urls['buffer']}/v1/sample", json={"n": 0})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "n"

    # the same `btp run` that embeds everything drives the remote stack when the URLs are set
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env |= {f"BTP_{name.upper()}_URL": url for name, url in urls.items()} | {"BTP_DATA_DIR": str(tmp_path / "cli")}
    run = subprocess.run([sys.executable, "-m", "services.pipeline.cli.main", "run", "--name", "remote", "--model",
                          str(tiny_model), "--train-size", "2", "--test-size", "2", "--k", "2", "--max-new-tokens",
                          "8", "--n", "2", "--steps", "1", "--prompt-format", "raw"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(remote)" in run.stdout and "after 1" in run.stdout
    assert not (tmp_path / "cli" / "runs" / "remote" / "buffer.sqlite3").exists()  # the remote buffer was used
    assert _ok(http.get(f"{urls['buffer']}/v1/stats"))["experiences"] > 4

    # `btp experiment` drives the same stack: each recipe's buffer is a scope (data set) of the buffer
    # service, and the trainer service trains every round on exactly that scope
    jobs_before = len(_ok(http.get(f"{urls['trainer']}/v1/jobs"))["items"])
    exp_cfg = tmp_path / "exp.json"
    exp_cfg.write_text(json.dumps({
        "name": "on-stack", "model": str(tiny_model), "train_size": 2, "test_size": 2, "k": 2,
        "max_new_tokens": 8, "gen_batch": 4, "n": 2, "steps": 1, "max_seq_len": 128, "rounds": 2,
        "bootstrap_draws": 100, "variants": [{"name": "p2value-rank"}, {"name": "uniform", "scheme": "uniform"}]}))  # fmt: skip
    exp_out = tmp_path / "exp-out"
    exp = subprocess.run([sys.executable, "-m", "services.pipeline.cli.main", "experiment", "--config", str(exp_cfg),
                          "--out", str(exp_out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert not list(exp_out.glob("*.sqlite3")) and not (exp_out / "checkpoints").exists()  # nothing in-process
    results = json.loads((exp_out / "results.json").read_text())
    assert set(results["variants"]) == {"p2value-rank", "uniform"} and results["not_finished"] == []
    scopes = {d for d in _ok(http.get(f"{urls['buffer']}/v1/stats"))["datasets"] if d.startswith("exp:on-stack-")}
    assert {s.rsplit(":", 1)[1] for s in scopes} == {"beam", "own-p2value-rank-s0", "own-uniform-s0"}
    jobs = _ok(http.get(f"{urls['trainer']}/v1/jobs"))["items"]
    exp_jobs = [j for j in jobs if (j["config"]["sample"].get("datasets") or [""])[0].startswith("exp:on-stack-")]
    assert len(jobs) - jobs_before == len(exp_jobs) == 4  # 2 recipes x 2 rounds, all on the trainer service
    assert all(j["status"] == "succeeded" for j in exp_jobs)
    for j in exp_jobs:
        own = j["config"]["sample"]["datasets"][0]
        assert own.endswith(("own-p2value-rank-s0", "own-uniform-s0"))
        # the round-1 beam programs were copied into the recipe's own scope, round 2's were added there
        stats = _ok(http.get(f"{urls['buffer']}/v1/stats", params={"dataset": own}))
        assert stats["experiences"] >= 2 and stats["judged"] == stats["experiences"]
    r2 = [j for j in exp_jobs if j["config"]["model"] != str(tiny_model)]
    assert len(r2) == 2  # round 2 continued from round 1's checkpoint, as the trainer wrote it

    # asynchronous BTP against the stack: versions published by the driver, trained by the Celery worker
    run = subprocess.run([sys.executable, "-m", "services.pipeline.cli.main", "run", "--async", "--name", "remote-async",
                          "--model", str(tiny_model), "--train-size", "2", "--test-size", "2", "--k", "2",
                          "--max-new-tokens", "8", "--n", "2", "--steps", "1", "--budget", "4", "--actors", "2",
                          "--prompt-format", "raw", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["async"]["version"] == 2 and result["async"]["trained_programs"] == 4
    assert [r["version"] for r in result["rounds"]] == [0, 1, 2]
    health = _ok(http.get(f"{urls['generator']}/health"))
    assert (health["weights_version"], health["lineage"]) == (2, "remote-async")
    mine = [e for e in _ok(http.get(f"{urls['buffer']}/v1/experiences", params={"limit": 1000}))["items"]
            if e["source"].startswith(f"{tiny_model}@v")]  # fmt: skip
    assert mine and all(e["weights_version"] is not None and e["pass_rate"] is not None for e in mine)
    assert all(e["source"] == f"{tiny_model}@v{e['weights_version']}" for e in mine)

    # 7. Ctrl-C/SIGTERM stops every child
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(lines)
    assert any("stopped" in line for line in lines)
    for url in urls.values():
        assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1]))


def test_dashboard_in_chromium_on_the_live_stack(stack: Any, tiny_model: Path, tmp_path: Path) -> None:
    """The stack's dashboard in headless Chromium while `btp run` drives the stack: every badge green, the
    trainer's jobs with the loss the trainer reports, the run's curves, no console errors, live updates."""
    from .test_dashboard import _browser, _numbers

    sync_playwright, chromium = _browser()
    urls = stack[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env |= {f"BTP_{n.upper()}_URL": urls[n] for n in ("generator", "judge", "buffer", "trainer")}
    env |= {"BTP_DATA_DIR": str(tmp_path / "data")}  # the stack's: the dashboard lists this run
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "run", "--name", "stack-live", "--model", str(tiny_model),
           "--train-size", "4", "--test-size", "3", "--k", "2", "--max-new-tokens", "12", "--n", "2", "--steps", "3",
           "--rounds", "2", "--prompt-format", "raw"]  # fmt: skip
    errors: list[str] = []
    http = httpx.Client(timeout=60)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{urls['dashboard']}/?interval=500")
        page.wait_for_function("Number(document.getElementById('refreshes').dataset.count) >= 1")
        assert [page.get_attribute(f"[data-service={n}]", "data-state") for n in
                ("generator", "judge", "buffer", "trainer")] == ["ok"] * 4
        run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        phases: set[str] = set()
        deadline = time.monotonic() + 500
        while run.poll() is None and time.monotonic() < deadline:
            node = page.query_selector("#phase-now")
            if node is not None:
                phases.add(node.inner_text())
            time.sleep(0.25)
        out = run.communicate(timeout=60)[0]
        assert run.returncode == 0, out
        count = int(page.get_attribute("#refreshes", "data-count") or 0)
        # (a long timeout: every refresh polls four services, slow on a loaded 2-core machine)
        page.wait_for_function(f"Number(document.getElementById('refreshes').dataset.count) >= {count + 2}",
                               timeout=180_000)
        jobs = _ok(http.get(f"{urls['trainer']}/v1/jobs"))["items"]
        latest = max(jobs, key=lambda j: j["created_at"])
        assert page.query_selector(f"tr[data-job='{latest['id']}']") is not None
        shown = [y for _, _, y in _numbers(page, "#chart-job-loss circle.point")]
        assert shown == pytest.approx([p["loss"] for p in latest["loss_history"]]) and len(shown) == 3
        lrs = [y for _, _, y in _numbers(page, "#chart-job-lr circle.point")]
        assert lrs == pytest.approx([p["lr"] for p in latest["loss_history"]])
        groups = _ok(http.get(f"{urls['buffer']}/v1/stats/groups"))["groups"]
        bars = {(s, x): y for s, x, y in _numbers(page, "#chart-groups rect.bar") if y}
        assert bars == {(g["source"], f"round {g['round']}"): g["experiences"] for g in groups}
        assert len(page.query_selector_all("#chart-recent circle[data-series='mean P2Value']")) >= 6
        evals = [p for p in _numbers(page, "#chart-eval circle.point") if p[0] == "pass rate"]
        assert [x for _, x, _ in evals] == ["0", "1", "2"]
        # the page followed the run through several phases (it polls: a short phase such as beam search
        # with the tiny model can fall between two polls on a loaded machine)
        assert len(phases) >= 3 and any("fine-tuning" in p for p in phases), phases
        if os.environ.get("BTP_DASHBOARD_SCREENSHOTS"):  # refresh the README's picture
            page.screenshot(path=str(ROOT / "docs" / "dashboard-stack.png"), full_page=True)
        browser.close()
    assert errors == []
