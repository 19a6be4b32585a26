"""`btp run` when output is not a terminal: a line per phase with counts and rates (for logs), and `--json`
for scripts (results on stdout, progress on stderr)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from services.pipeline.cli.main import app


def test_run_prints_phase_lines_and_json(tiny_model: Path, data_dir: Path) -> None:
    args = ["run", "--model", str(tiny_model), "--train-size", "2", "--test-size", "2", "--k", "2",
            "--max-new-tokens", "8", "--n", "2", "--steps", "1", "--rounds", "1", "--prompt-format", "raw"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--name", "lines"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for phase in ("evaluation before training", "round 1: beam search (k=2)", "round 1: fine-tuning",
                  "evaluation after round 1"):  # fmt: skip
        assert any(line.startswith(f"{phase}") and "started" in line for line in lines), result.output
        done = [line for line in lines if line.startswith(phase) and " done " in line]
        assert done and "/s)" in done[0], result.output
    assert "\x1b[" not in result.output  # no terminal control sequences in logs

    result = CliRunner().invoke(app, [*args, "--name", "js", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["run"] == "js" and [r["round"] for r in body["rounds"]] == [0, 1]
    assert {"pass_rate", "accuracy", "tasks"} <= set(body["rounds"][0])
    assert "round 1: beam search" in result.stderr


def _phase_lines(text: str, phase: str) -> tuple[list[str], list[str]]:
    lines = re.split(r"[\r\n]", text)  # transformers' loading bars end in a carriage return, not a newline
    return ([x for x in lines if x.startswith(phase) and ": started, " in x],
            [x for x in lines if x.startswith(phase) and ": done " in x and x.endswith("/s)")])


def test_import_prints_phase_lines_and_json(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["import", "humaneval"])
    assert result.exit_code == 0, result.output
    started, done = _phase_lines(result.output, "humaneval: storing tasks in the buffer")
    assert started == ["humaneval: storing tasks in the buffer: started, 164 to do"], result.output
    assert len(done) == 1 and " 164/164 in " in done[0], result.output
    assert "humaneval: imported 164 tasks" in result.output and "\x1b[" not in result.output

    result = CliRunner().invoke(app, ["import", "humaneval", "--json", "--test-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["dataset"] == "humaneval" and body["imported"] == 164 and body["bad_records"] == 0
    assert sum(body["splits"].values()) == 164 and body["splits"]["test"] < body["splits"]["train"]
    assert _phase_lines(result.stderr, "humaneval: storing tasks")[1]  # progress went to stderr


def test_sweep_json_with_progress_on_stderr(tiny_model: Path, data_dir: Path) -> None:
    args = ["sweep", "--alphas", "0,1", "--name", "sw", "--model", str(tiny_model), "--train-size", "2",
            "--test-size", "2", "--k", "2", "--max-new-tokens", "8", "--n", "2", "--steps", "1",
            "--prompt-format", "raw", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["sweep"] == "sw" and [a["alpha"] for a in body["alphas"]] == [0.0, 1.0]
    assert [a["run"] for a in body["alphas"]] == ["sw-alpha0", "sw-alpha1"] and Path(body["report"]).exists()
    for phase in ("round 1: beam search (k=2)", "evaluation after round 1"):
        started, done = _phase_lines(result.stderr, phase)
        assert len(started) == 2 and len(done) == 2, result.stderr  # one per alpha's run


def test_experiment_json_with_phase_lines(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    from services.pipeline.cli.main import app as btp

    config = tmp_path / "exp.json"
    config.write_text(json.dumps({
        "name": "tinyexp", "model": str(tiny_model), "train_size": 2, "test_size": 2, "teacher_size": 0, "k": 2,
        "max_new_tokens": 8, "gen_batch": 4, "n": 2, "steps": 1, "max_seq_len": 128, "device": "cpu",
        "bootstrap_draws": 100, "prompt_format": "raw", "variants": [{"name": "p2value-rank"}]}))
    result = CliRunner().invoke(btp, ["experiment", "--config", str(config), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["experiment"] == "tinyexp" and set(body["variants"]) == {"p2value-rank"} and body["base"]
    err = result.stderr
    for phase in (f"{tiny_model}@base:beam: beam programs (k=2)", "judging ", "evaluation of ", "round 1: fine-tuning"):
        started, done = _phase_lines(err, phase)
        assert started and done, (phase, err)
    assert "sample-beam: done in" in err and "\x1b[" not in err
