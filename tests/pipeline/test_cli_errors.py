"""Command-line mistakes, each through the real `btp` process: one line on stderr naming the option, the bad
value and what is allowed, exit code 2; choice lists come from the registries that define the values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.schemas.buffer import Possibility, Scheme
from services.models import KNOWN_MODELS
from services.pipeline.cli.main import SERVICE_NAMES, app
from services.pipeline.datasets.loaders import ALL_DATASETS, DATASETS, OFFLINE_DATASETS


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


def _known_models() -> str:
    return ", ".join(m.name for m in KNOWN_MODELS)


CASES: dict[str, tuple[list[str], str]] = {
    "unknown data set": (
        ["run", "--dataset", "nope"],
        f"error: Invalid value for '--dataset': 'nope' is not one of {_quoted(ALL_DATASETS)}.",
    ),
    "codeio without its file": (
        ["run", "--dataset", "mbpp", "--dataset", "codeio"],
        "error: Invalid value for '--dataset': 'codeio' is not available offline: give its file with "
        "--dataset-path codeio=FILE",
    ),
    "sweep of a data set without a copy here": (
        ["sweep", "--dataset", "apps"],
        f"error: Invalid value for '--dataset': 'apps' is not one of {_quoted(OFFLINE_DATASETS)}.",
    ),
    "data set without its file": (
        ["run", "--dataset", "apps"],
        "error: Invalid value for '--dataset': 'apps' is not available offline: give its file with "
        "--dataset-path apps=FILE",
    ),
    "bad --dataset-path": (
        ["run", "--dataset-path", "apps.jsonl"],
        "error: Invalid value for '--dataset-path': 'apps.jsonl' should be NAME=PATH",
    ),
    "--dataset-path of no data set": (
        ["run", "--dataset-path", "nope=x.jsonl"],
        f"error: Invalid value for '--dataset-path': 'nope' is not a data set; choose from {', '.join(ALL_DATASETS)}",
    ),
    "negative learning rate": (
        ["run", "--lr", "-1"],
        "error: Invalid value for '--lr': -1.0 should be greater than 0",
    ),
    "learning rate above 1": (
        ["run", "--lr", "2"],
        "error: Invalid value for '--lr': 2.0 should be less than or equal to 1",
    ),
    "k out of range": (
        ["run", "--k", "0"],
        "error: Invalid value for '--k': '0' should be greater than or equal to 1",
    ),
    "not a number": (
        ["run", "--alpha", "half"],
        "error: Invalid value for '--alpha': 'half' should be a valid number, unable to parse string as a number",
    ),
    "unknown scheme": (
        ["run", "--scheme", "nope"],
        f"error: Invalid value for '--scheme': 'nope' is not one of {_quoted(Scheme.__args__)}.",
    ),
    "unknown possibility": (
        ["sweep", "--possibility", "nope"],
        f"error: Invalid value for '--possibility': 'nope' is not one of {_quoted(Possibility.__args__)}.",
    ),
    "unknown prompt format": (
        ["run", "--prompt-format", "nope"],
        "error: Invalid value for '--prompt-format': 'nope' is not one of 'auto', 'raw', 'chat'.",
    ),
    "bad run name": (
        ["run", "--name", "a/b"],
        "error: Invalid value for '--name': 'a/b' should match pattern '^[A-Za-z0-9_][A-Za-z0-9_.\\-]*$'",
    ),
    "judge time above its maximum": (
        ["run", "--judge-time-s", "1000"],
        "error: Invalid value for '--judge-time-s': 1000.0 should be less than or equal to 600",
    ),
    "unknown model": (
        ["run", "--model", "nope"],
        f"error: Invalid value for '--model': 'nope' is not a folder, not a .gguf file and not one of {_known_models()}",
    ),
    "two teachers": (
        ["run", "--teacher-url", "http://a", "--teacher-jsonl", "x.jsonl"],
        "error: Invalid value for '--teacher-url' / '--teacher-jsonl': give at most one teacher",
    ),
    "OpenAI teacher without a model": (
        ["run", "--teacher-openai-url", "http://a/v1"],
        "error: Invalid value for '--teacher-openai-url': 'http://a/v1' needs --teacher-model (the model name at "
        "that endpoint)",
    ),
    "bad alphas": (
        ["sweep", "--alphas", "0,2"],
        "error: Invalid value for '--alphas': '0,2' should be comma-separated numbers from 0 to 1",
    ),
    "unknown service": (
        ["serve", "database"],
        f"error: Invalid value for 'NAME': 'database' is not one of {_quoted(SERVICE_NAMES)}.",
    ),
    "unknown option": (["run", "--rounds", "1", "--bogus"], "error: No such option: --bogus (Possible options: --rounds)"),
    "unknown command": (["runn"], "error: No such command 'runn'. Did you mean 'run'?"),
    "missing argument": (["report"], "error: Missing argument 'RUN'."),
    "import option out of range": (
        ["import", "mbpp", "--test-fraction", "2"],
        "error: Invalid value for '--test-fraction': '2' should be less than or equal to 1",
    ),
    "unknown import": (["import", "nope"], "error: No such command 'nope'."),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line(tmp_path: Path, case: str) -> None:
    args, line = CASES[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env["BTP_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "services.pipeline.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (proc.stderr.splitlines()[:1], proc.returncode) == ([line], 2), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stdout == ""
    assert not (tmp_path / "data" / "runs").exists()  # nothing was created


def test_choices_come_from_the_registries() -> None:
    """`btp import` and `btp run --dataset` know the same data sets: the loaders' and codeio."""
    from typer.main import get_command

    group = get_command(app)
    imports = group.commands["import"].commands  # type: ignore[attr-defined]
    assert set(imports) == set(ALL_DATASETS) == {*DATASETS, "codeio"}
