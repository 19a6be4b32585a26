"""`btp import`, `btp serve`, `btp model prepare` and `btp report` through the real command line."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.pipeline.cli.main import app

DATA = Path(__file__).parent / "data"


def _tasks(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "btp.sqlite3") as conn:
        return conn.execute("SELECT id, dataset, split FROM tasks ORDER BY id").fetchall()


def test_import_good_and_bad_records(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["import", "apps", "--path", str(DATA / "apps_sample.jsonl"), "--split", "test"])
    assert result.exit_code == 1  # bad records reported ...
    assert "imported 4 tasks" in result.output and "apps_sample.jsonl:3" in result.output
    assert "(5000)" in result.output and "Traceback" not in result.output
    rows = _tasks(data_dir)  # ... and the good ones are in the buffer
    assert [r[0] for r in rows] == ["APPS/4001", "APPS/4002", "APPS/4003", "APPS/4004"]
    assert {r[2] for r in rows} == {"test"}
    cc = runner.invoke(app, ["import", "codecontests", "--path", str(DATA / "codecontests_sample.jsonl")])
    assert cc.exit_code == 1 and "imported 2 tasks" in cc.output and "(bad_counts)" in cc.output
    assert len(_tasks(data_dir)) == 6


def test_import_humaneval_is_idempotent_and_split(data_dir: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["import", "humaneval", "--test-fraction", "0.25"])
        assert result.exit_code == 0, result.output
    rows = _tasks(data_dir)
    assert len(rows) == 164
    assert 25 < sum(r[2] == "test" for r in rows) < 60


def test_import_missing_file_is_a_clear_error(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["import", "mbpp", "--path", str(data_dir / "nope.json")])
    assert result.exit_code == 1 and "not found" in result.output and "Traceback" not in result.output


def test_serve_unknown_service_and_report_unknown_run(data_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "database"]).exit_code == 2
    result = runner.invoke(app, ["report", "ghost"])
    assert result.exit_code == 2 and "no run 'ghost'" in result.output


def test_model_prepare_is_cached(data_dir: Path, tiny_model: Path) -> None:
    result = CliRunner().invoke(app, ["model", "prepare", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert str(tiny_model) in result.output.replace("\n", "")


def test_sweep_passes_every_run_option(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug: `btp sweep` dropped --priority-exponent, --seed, --lora and the judge limits."""
    from services.pipeline.run import report, sweep

    seen: list[Any] = []

    def fake_sweep(base: Any, alphas: list[float], settings: Any, execute: Any) -> list[dict[str, Any]]:
        seen.append(base)
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    monkeypatch.setattr(report, "write_sweep_report", lambda results, folder: folder / "sweep.html")
    args = ["sweep", "--name", "sw", "--alphas", "0,1", "--priority-exponent", "2.5", "--seed", "7", "--lora",
            "--lora-r", "4", "--judge-time-s", "3.5", "--judge-memory-mb", "256", "--test-fraction", "0.3",
            "--possibility", "sequence"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (base,) = seen
    assert (base.priority_exponent, base.seed, base.lora, base.lora_r) == (2.5, 7, True, 4)
    assert (base.judge_time_s, base.judge_memory_mb, base.test_fraction, base.possibility) == (3.5, 256, 0.3, "sequence")
