"""`btp run --async` embedded, with the real apps and the tiny model: the three loops run at once, every
program records the weights version that sampled it, nothing is trained on before it is judged, the
staleness bound holds, and Ctrl-C drains to a state that resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.pipeline.cli.main import app
from services.pipeline.run.folder import RunFolder
from services.pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--train-size", "3", "--test-size", "2", "--k", "2", "--max-new-tokens", "12", "--n", "2",
         "--lr", "1e-3", "--prompt-format", "raw"]  # fmt: skip


def _rows(folder: RunFolder) -> list[dict[str, Any]]:
    with sqlite3.connect(folder.path / "buffer.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(
            "SELECT id, task_id, program, source, round, weights_version, pass_rate, judged_at FROM experiences")]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp() if "+" in value[10:] else datetime.fromisoformat(value + "+00:00").timestamp()


def _check_invariants(folder: RunFolder, max_lag: int | None) -> dict[str, Any]:
    """Every stored program judged, stamped with its version; every trained one judged before the step."""
    rows = _rows(folder)
    assert rows and all(r["pass_rate"] is not None for r in rows)  # drained: nothing left unjudged
    for r in rows:
        assert r["weights_version"] is not None and r["source"].endswith(f"@v{r['weights_version']}")
        if max_lag is not None:  # pass p starts at version >= p - 1 - max_lag
            assert r["weights_version"] >= r["round"] - 1 - max_lag
    assert len({(r["task_id"], r["program"], r["source"]) for r in rows}) == len(rows)
    by_id = {r["id"]: r for r in rows}
    info = json.loads((folder.path / "metrics" / "async.json").read_text())
    versions = [v["version"] for v in info["versions"]]
    assert versions == list(range(1, len(versions) + 1))
    trained = 0
    for rec in info["versions"]:
        for point in rec["loss"]:
            assert point["experience_ids"]
            for eid, wv in zip(point["experience_ids"], point["weights_versions"], strict=True):
                judged_at = by_id[eid]["judged_at"]
                assert judged_at is not None and _ts(judged_at) <= point["at"]  # judged before trained
                assert wv == by_id[eid]["weights_version"] and wv <= rec["version"] - 1  # lag >= 0
            trained += len(point["experience_ids"])
        assert rec["trained_programs"] == trained and rec["lag"]["max"] >= 0
    return info


def test_async_run_embedded(tiny_model: Path, data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--async", "--name", "as", "--model", str(tiny_model), *SMALL,
                                 "--steps", "2", "--publish-every", "1", "--rounds", "2", "--actors", "2",
                                 "--max-lag", "1", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    assert [r["version"] for r in out["rounds"]] == [0, 2, 4]  # held-out evaluation every 2 steps
    assert [r["trained_programs"] for r in out["rounds"]] == [0, 4, 8]  # 2 rounds x 2 steps x n=2
    assert out["async"]["version"] == 4 and out["async"]["trained_programs"] == 8
    assert "sampling_lag" in out["async"] and [v["version"] for v in out["async"]["versions"]] == [1, 2, 3, 4]
    assert out["async"]["eval_seconds"] > 0 and out["async"]["batches_during_eval"] == 0
    folder = RunFolder.open(Settings().runs_dir(), "as")
    state = folder.state()
    assert state.finished_at and state.version == 4 and state.trained_programs == 8
    assert state.checkpoint and "/version_4/" in state.checkpoint and Path(state.checkpoint).is_dir()
    assert state.done == ["eval:0", "eval:1", "eval:2"]
    _check_invariants(folder, max_lag=1)
    progress = json.loads((folder.path / "progress.json").read_text())
    assert progress["async"]["version"] == 4 and "lag" in progress["async"]


def test_async_budget_in_wall_seconds(tiny_model: Path, data_dir: Path) -> None:
    """--budget 12s: no program budget; the trainer stops at the first version after 12 s, and that last
    version is evaluated even off the evaluation grid."""
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--async", "--name", "wall", "--model", str(tiny_model), *SMALL,
                                 "--steps", "1000", "--publish-every", "1", "--budget", "12s", "--max-lag", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = RunFolder.open(Settings().runs_dir(), "wall")
    state = folder.state()
    assert state.finished_at and state.version >= 1 and state.trained_programs == 2 * state.version
    metrics = folder.metrics()
    assert [m["version"] for m in metrics] == [0, state.version]  # eval every 1000 versions: only the last, off grid
    info = _check_invariants(folder, max_lag=0)
    assert info["versions"][-1]["wall_seconds"] >= 12.0 > info["versions"][-2]["wall_seconds"] if state.version > 1 else True


def test_budget_option_is_checked(data_dir: Path) -> None:
    runner = CliRunner()
    for bad in ("0", "5x", "1.5", "-3"):
        result = runner.invoke(app, ["run", "--async", "--budget", bad])
        assert result.exit_code == 2 and "--budget" in result.output, (bad, result.output)
    result = runner.invoke(app, ["run", "--async", "--teacher-jsonl", "x.jsonl"])
    assert result.exit_code == 2 and "teacher" in result.output


@pytest.mark.integration  # starts real processes
def test_ctrl_c_drains_then_resume_finishes(tiny_model: Path, data_dir: Path) -> None:
    env = {**os.environ, "BTP_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "run", "--async", "--name", "intr", "--model",
           str(tiny_model), *SMALL, "--steps", "1", "--budget", "400", "--max-lag", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    folder_path = data_dir / "runs" / "intr"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = folder_path / "state.json"
            if state.exists() and json.loads(state.read_text()).get("version", 0) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "--resume intr" in output
    folder = RunFolder.open(data_dir / "runs", "intr")
    state = folder.state()
    assert state.finished_at is None and 2 <= state.version < 200 and state.trained_programs == 2 * state.version
    assert state.checkpoint and f"/version_{state.version}/" in state.checkpoint
    _check_invariants(folder, max_lag=1)  # drained: everything stored is judged
    before = {(r["task_id"], r["program"], r["source"]): r["pass_rate"] for r in _rows(folder)}
    stopped_at = state.version

    # go on: a smaller budget in the config would end at once, so resume with the run's own (400 programs)
    config = json.loads((folder.path / "config.json").read_text())
    config["budget_programs"] = 2 * (stopped_at + 2)  # two more versions
    (folder.path / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["run", "--resume", "intr"], env={"BTP_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    state = folder.state()
    assert state.finished_at and state.version == stopped_at + 2 and state.trained_programs == 2 * state.version
    info = _check_invariants(folder, max_lag=1)
    assert [v["version"] for v in info["versions"]] == list(range(1, stopped_at + 3))
    after = {(r["task_id"], r["program"], r["source"]): r["pass_rate"] for r in _rows(folder)}
    assert all(after[k] == v for k, v in before.items())  # nothing lost, nothing judged again


def _serve(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "serve", name, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the {name} did not start")


@pytest.mark.integration  # starts real processes
def test_killed_judge_is_replaced_nothing_lost_or_duplicated(tiny_model: Path, data_dir: Path) -> None:
    """The judge as its own process (BTP_JUDGE_URL), killed with SIGKILL mid-run and started again on the same
    port: the run ends with its whole budget trained, every program judged once and stored once."""
    from services.pipeline.cli.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")} | {"BTP_DATA_DIR": str(data_dir)}
    judge = _serve("judge", port, env)
    run_env = env | {"BTP_JUDGE_URL": f"http://127.0.0.1:{port}", "BTP_SERVICE_RETRY_S": "2"}
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "run", "--async", "--name", "kill", "--model",
           str(tiny_model), *SMALL, "--steps", "1", "--budget", "24", "--max-lag", "1"]  # fmt: skip
    run = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = data_dir / "runs" / "kill" / "state.json"
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text()).get("version", 0) >= 2:
                break
            time.sleep(0.2)
        assert run.poll() is None, run.communicate()[0]
        judge.kill()  # mid-run: the actors keep storing programs nobody judges
        judge.wait(30)
        time.sleep(4)  # longer than the client's retries: a judge call now fails and its loop restarts
        judge = _serve("judge", port, env)
        replaced_at = time.time()
        output, _ = run.communicate(timeout=400)
    finally:
        for proc in (run, judge):
            if proc.poll() is None:
                proc.kill()
    assert run.returncode == 0, output
    folder = RunFolder.open(data_dir / "runs", "kill")
    state_now = folder.state()
    assert state_now.finished_at and state_now.trained_programs == 24 and state_now.version == 12
    _check_invariants(folder, max_lag=1)  # every program stored once, judged, trained only once judged
    judged_late = [r for r in _rows(folder) if _ts(r["judged_at"]) > replaced_at]
    assert judged_late  # the run went on with the replacement judge
    assert "(mixed: remote judge)" in output


def test_trainer_draws_judged_programs_only(tiny_model: Path, data_dir: Path) -> None:
    """A buffer holding as many unjudged programs as judged ones: the async trainer's version trains on 40
    draws, every one of them judged (an unjudged draw would be a pending program trained before its verdict)."""
    from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate
    from services.pipeline.connect import open_services
    from services.pipeline.run.asynchronous import AsyncPipeline
    from services.pipeline.run.config import RunConfig

    cfg = RunConfig(name="judged", model=str(tiny_model), train_size=3, test_size=2, k=2, max_new_tokens=12, n=8,
                    steps=5, learning_rate=1e-3, prompt_format="raw", asynchronous=True)  # fmt: skip
    settings = Settings()
    folder = RunFolder.create(settings.runs_dir(), cfg)
    with open_services(settings, model=cfg.model, buffer_database_url=folder.buffer_database_url(),
                       checkpoints=folder.path / "checkpoints") as svc:  # fmt: skip
        pipe = AsyncPipeline(cfg, folder, svc)
        pipe.upload_tasks()
        items = [ExperienceIn(task_id=t.id, program=f"    return {i}\n", logprob=-1.0 - i, token_count=4,
                              source="s", weights_version=0) for t in pipe.train_tasks for i in range(4)]  # fmt: skip
        ids = svc.buffer.add_experiences(items).ids
        judged = set(ids[::2])
        for eid in judged:
            svc.buffer.update_experience(eid, ExperienceUpdate(pass_rate=0.0))
        pipe._train_version(1)
    record = json.loads((folder.path / "metrics" / "async.json").read_text())["versions"][0]
    trained = [eid for point in record["loss"] for eid in point["experience_ids"]]
    assert len(trained) == 40 and set(trained) <= judged and len(set(trained)) > 1
    assert record["lag"] == {"programs": 40, "mean": 0.0, "max": 0}
    assert folder.state().version == 1 and folder.state().trained_programs == 40


@pytest.mark.integration  # starts real processes
def test_killed_generator_is_replaced_and_gets_the_run_weights_back(tiny_model: Path, data_dir: Path) -> None:
    """The generator as its own process, SIGKILLed mid-run and started again on its base weights: the run
    publishes its current version again (a restarted generator answers version 0, and versions never go
    back), finishes its budget, and loses or duplicates nothing; programs keep the version that sampled them."""
    from services.pipeline.cli.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")} | {
        "BTP_DATA_DIR": str(data_dir), "BTP_GENERATOR_MODEL": str(tiny_model), "BTP_MODEL_ROOTS": str(data_dir / "runs")}
    generator = _serve("generator", port, env)
    run_env = env | {"BTP_GENERATOR_URL": f"http://127.0.0.1:{port}", "BTP_SERVICE_RETRY_S": "2"}
    cmd = [sys.executable, "-m", "services.pipeline.cli.main", "run", "--async", "--name", "killgen", "--model",
           str(tiny_model), *SMALL, "--steps", "1", "--budget", "24", "--max-lag", "1"]  # fmt: skip
    run = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = data_dir / "runs" / "killgen" / "state.json"
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text()).get("version", 0) >= 2:
                break
            time.sleep(0.2)
        assert run.poll() is None, run.communicate()[0]
        generator.kill()
        generator.wait(30)
        time.sleep(4)
        generator = _serve("generator", port, env)
        output, _ = run.communicate(timeout=400)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    finally:
        for proc in (run, generator):
            if proc.poll() is None:
                proc.kill()
    assert run.returncode == 0, output
    folder = RunFolder.open(data_dir / "runs", "killgen")
    final = folder.state()
    assert final.finished_at and final.trained_programs == 24 and final.version == 12
    assert (health["lineage"], health["weights_version"]) == ("killgen", 12)
    assert "(mixed: remote generator)" in output
    _check_invariants(folder, max_lag=None)  # stored once, judged, trained only once judged


def test_actors_hand_out_nothing_while_an_evaluation_runs(tiny_model: Path, data_dir: Path) -> None:
    """A held-out evaluation runs on a generator nobody else uses: an actor asking for a batch meanwhile
    waits (also when the evaluation starts while it waits on the staleness bound) and gets it once the
    evaluation ends."""
    import threading

    from services.pipeline.connect import open_services
    from services.pipeline.run.asynchronous import AsyncPipeline
    from services.pipeline.run.config import RunConfig

    cfg = RunConfig(name="pause", model=str(tiny_model), train_size=3, test_size=2, k=2, max_new_tokens=12, n=2,
                    steps=1, learning_rate=1e-3, prompt_format="raw", asynchronous=True, max_lag=0)  # fmt: skip
    settings = Settings()
    folder = RunFolder.create(settings.runs_dir(), cfg)
    with open_services(settings, model=cfg.model, buffer_database_url=folder.buffer_database_url(),
                       checkpoints=folder.path / "checkpoints") as svc:  # fmt: skip
        pipe = AsyncPipeline(cfg, folder, svc)
        got: list[Any] = []

        def actor() -> None:
            got.append(pipe._next_batch())

        with pipe.cond:
            pipe._evaluating = True
        first = threading.Thread(target=actor)
        first.start()
        first.join(1.0)
        assert first.is_alive() and got == []  # waiting while the evaluation runs
        with pipe.cond:
            pipe._evaluating = False
            pipe.cond.notify_all()
        first.join(10)
        assert not first.is_alive() and got[0] is not None and got[0][0] == 1  # pass 1's first batch
        # pass 1 handed out, max_lag 0: the next actor waits on the staleness bound (version 0 < 1) ...
        with pipe.cond:
            pipe._pass_next = len(pipe._pass_order)
        second = threading.Thread(target=actor)
        second.start()
        second.join(0.5)
        assert second.is_alive()
        with pipe.cond:  # ... an evaluation starts, then the trainer publishes version 1 during it
            pipe._evaluating = True
            pipe.p.version = pipe.p.served = 1
            pipe.cond.notify_all()
        second.join(1.0)
        assert second.is_alive() and len(got) == 1  # still nothing handed out while evaluating
        with pipe.cond:
            pipe._evaluating = False
            pipe.cond.notify_all()
        second.join(10)
        assert not second.is_alive() and got[1] is not None and got[1][0] == 2
        assert pipe.p.batches_during_eval == 0
        pipe.stop.set()
