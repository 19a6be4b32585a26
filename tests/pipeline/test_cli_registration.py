"""`btp experiment` and `btp import codeio` are registered on the main command line."""

from __future__ import annotations

from typer.testing import CliRunner

from services.pipeline.cli.main import app


def test_experiment_and_codeio_commands_are_registered() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output
    result = runner.invoke(app, ["import", "codeio", "--help"])
    assert result.exit_code == 0, result.output
