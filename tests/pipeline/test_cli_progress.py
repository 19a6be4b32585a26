"""`btp run` when output is not a terminal: a line per phase with counts and rates (for logs), and `--json`
for scripts (results on stdout, progress on stderr)."""

from __future__ import annotations

import json
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
