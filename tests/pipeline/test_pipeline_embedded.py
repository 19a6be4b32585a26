"""Algorithm 1 end to end in embedded mode: the real buffer (SQLite), judge (bubblewrap), generator and
in-process trainer, with a tiny random model; then a crash in training and a resume."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.common.schemas.trainer import JobCreate
from services.pipeline.cli.main import app, execute
from services.pipeline.connect import open_services
from services.pipeline.run.config import RunConfig
from services.pipeline.run.folder import RunFolder
from services.pipeline.run.loop import Pipeline, Reporter
from services.pipeline.settings import Settings


def _cfg(tiny_model: Path, name: str, **kw: Any) -> RunConfig:
    base = {"name": name, "model": str(tiny_model), "datasets": ["mbpp"], "train_size": 3, "test_size": 2,
            "rounds": 1, "k": 2, "max_new_tokens": 12, "n": 2, "steps": 1, "learning_rate": 1e-3,
            "prompt_format": "raw"}  # fmt: skip
    return RunConfig.model_validate(base | kw)


def _experiences(folder: RunFolder) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder.path / "buffer.sqlite3") as conn:
        return conn.execute("SELECT task_id, program, source, pass_rate, round FROM experiences").fetchall()


def test_one_round_embedded(tiny_model: Path, data_dir: Path) -> None:
    settings = Settings()
    metrics = execute(_cfg(tiny_model, "emb"), None, settings, quiet=True)
    assert [m["round"] for m in metrics] == [0, 1]
    for m in metrics:
        ev = m["eval"]
        assert ev["tasks"] == 2 and 0.0 <= ev["pass_rate"] <= 1.0 and 0.0 <= ev["accuracy"] <= ev["pass_rate"] + 1e-9
        assert set(ev["by_dataset"]) == {"mbpp"} and len(ev["per_task"]) == 2
    folder = RunFolder.open(settings.runs_dir(), "emb")
    state = folder.state()
    assert state.done == ["eval:0", "sample:1", "judge:1", "train:1", "eval:1"] and state.finished_at
    assert state.checkpoint and Path(state.checkpoint).is_dir() and "round_1" in state.checkpoint
    rows = _experiences(folder)
    assert 3 <= len(rows) <= 6 and all(r[3] is not None for r in rows)  # k=2 beams x 3 tasks, all judged
    assert all(r[2] == f"{tiny_model}@base" and r[4] == 1 for r in rows)
    r1 = metrics[1]
    assert r1["train"]["loss_history"] and r1["train"]["loss_history"][0]["loss"] > 0
    assert r1["replay"]["population"] == len(rows) and r1["buffer"]["datasets"]["mbpp"]["judged"] == len(rows)
    assert json.loads((folder.path / "config.json").read_text())["k"] == 2


class CrashingTrainer:
    """The real in-process trainer, but the process 'dies' (raises) before the first job runs."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def train(self, job: JobCreate, *, round_: int, reporter: Reporter) -> tuple[str, list[dict[str, Any]]]:
        self.calls += 1
        raise KeyboardInterrupt("simulated crash")


def test_crash_then_resume(tiny_model: Path, data_dir: Path) -> None:
    settings = Settings()
    cfg = _cfg(tiny_model, "crashy")
    folder = RunFolder.create(settings.runs_dir(), cfg)
    with open_services(settings, model=cfg.model, buffer_database_url=folder.buffer_database_url(),
                       checkpoints=folder.path / "checkpoints") as svc:  # fmt: skip
        svc.trainer = CrashingTrainer(svc.trainer)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            Pipeline(cfg, folder, svc).run()
    assert folder.state().done == ["eval:0", "sample:1", "judge:1"]
    before = _experiences(folder)
    eval0 = folder.metrics_path(0).read_text()

    runner = CliRunner()
    result = runner.invoke(app, ["run", "--resume", "crashy"])
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "after 1" in result.output
    assert folder.state().done == ["eval:0", "sample:1", "judge:1", "train:1", "eval:1"]
    assert _experiences(folder) == before  # nothing sampled or judged twice
    assert json.loads(folder.metrics_path(0).read_text())["eval"] == json.loads(eval0)["eval"]

    again = runner.invoke(app, ["run", "--name", "crashy", "--model", str(tiny_model)])
    assert again.exit_code == 2 and "--resume crashy" in again.output

    report = runner.invoke(app, ["report", "crashy"])
    assert report.exit_code == 0, report.output
    assert (folder.path / "report" / "report.html").is_file() and (folder.path / "report" / "rounds.png").is_file()


def test_teacher_jsonl_programs_train_the_student(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    settings = Settings()
    cfg = _cfg(tiny_model, "teach")
    from services.pipeline.run.loop import load_tasks

    train, _ = load_tasks(cfg)
    lines = [json.dumps({"task_id": t.id, "program": "    return None\n", "logprob": -3.0}) for t in train]
    lines.append(json.dumps({"task_id": train[0].id, "program": "    pass\n"}))  # no logprob: possibility 1
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--name", "teach", "--model", str(tiny_model), "--train-size", "3",
                                 "--test-size", "2", "--k", "2", "--max-new-tokens", "12", "--n", "2", "--steps", "1",
                                 "--rounds", "1", "--prompt-format", "raw", "--teacher-jsonl", str(teacher)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _experiences(RunFolder.open(settings.runs_dir(), "teach"))
    assert sorted(r[1] for r in rows) == sorted(["    return None\n"] * 3 + ["    pass\n"])
    assert {r[2] for r in rows} == {"jsonl:teacher.jsonl"} and all(r[3] is not None for r in rows)


def test_bad_options_are_clear(data_dir: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["run", "--scheme", "nope"])
    assert bad.exit_code == 2 and "scheme" in bad.output
    bad = runner.invoke(app, ["run", "--dataset", "apps"])
    assert bad.exit_code == 2 and "not available offline" in bad.output
    assert not (data_dir / "runs").exists() or not any((data_dir / "runs").iterdir())  # nothing was created
    bad = runner.invoke(app, ["run", "--resume", "ghost"])
    assert bad.exit_code == 2 and "no run 'ghost'" in bad.output
    bad = runner.invoke(app, ["run", "--teacher-url", "http://a", "--teacher-jsonl", "x.jsonl"])
    assert bad.exit_code == 2


def test_alpha_sweep(tiny_model: Path, data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "--alphas", "0,1", "--name", "sw", "--model", str(tiny_model),
                                 "--train-size", "2", "--test-size", "2", "--k", "2", "--max-new-tokens", "8",
                                 "--n", "2", "--steps", "1", "--prompt-format", "raw"])  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = data_dir / "runs"
    assert (runs / "sw" / "sweep.html").is_file() and (runs / "sw" / "sweep.png").is_file()
    rows = json.loads((runs / "sw" / "sweep.json").read_text())
    assert [r["alpha"] for r in rows] == [0.0, 1.0] and rows[0]["baseline_pass_rate"] == rows[1]["baseline_pass_rate"]
    for alpha in ("0", "1"):
        folder = RunFolder.open(runs, f"sw-alpha{alpha}")
        assert folder.config().alpha == float(alpha) and folder.state().finished_at
