"""CodeIO import end to end: the judge's real bubblewrap sandbox, the real buffer on PostgreSQL, the judge app.

Real CodeIO records (tests/pipeline/data/codeio/sample.jsonl) are imported, then their references are
judged through the judge's own app (pass rate 1.0) next to a broken variant (graded below 1.0). Small
synthetic records exercise every skip path.
"""

from __future__ import annotations

import ast
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.common.client import BufferClient, JudgeClient
from services.common.errors import NotFoundError
from services.common.schemas.buffer import TaskOut
from services.common.schemas.judge import JudgeRequest
from services.pipeline.connect import judge_sandbox
from services.pipeline.datasets.codeio.execution import RunnerConfig
from services.pipeline.datasets.codeio.importer import (
    ImportSummary,
    buffer_sink,
    codeio_command,
    import_codeio,
)
from services.pipeline.datasets.codeio.records import CodeIORecord, iter_records, parse_record, read_raw_lines

DATA = Path(__file__).parent / "data" / "codeio" / "sample.jsonl"
PG = "postgresql://postgres@127.0.0.1:5432"
TESTS = 8


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    name = f"btp_codeio_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sample_records() -> list[CodeIORecord | Exception]:
    return list(iter_records(read_raw_lines(DATA)))



@contextmanager
def buffer_at(database_url: str, data_dir: Path) -> Iterator[BufferClient]:
    """The in-process buffer on ``database_url``, opened where the CLI opens it."""
    from services.pipeline.connect import open_buffer
    from services.pipeline.settings import Settings

    with ExitStack() as stack:
        yield open_buffer(stack, Settings(data_dir=data_dir, buffer_url=None), database_url)

@pytest.fixture(scope="module")
def imported(
    sample_records: list[CodeIORecord | Exception], pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ImportSummary, dict[str, TaskOut], BufferClient]]:
    data_dir = tmp_path_factory.mktemp("btp")
    with buffer_at(pg_url, data_dir) as client:
        summary = import_codeio(
            sample_records,
            config=RunnerConfig(tests=TESTS),
            sink=buffer_sink(client),
            workers=2,
            batch_size=2,
        )
        tasks = {t.id: t for t in client.list_tasks(dataset="codeio").items}
        yield summary, tasks, client


@pytest.fixture(scope="module")
def judge() -> Iterator[JudgeClient]:
    from services.judge.app import create_app
    from services.judge.settings import Settings as JudgeSettings

    http: Any = TestClient(create_app(JudgeSettings(workers=2)), raise_server_exceptions=False)
    with http:
        yield JudgeClient(client=http)


def test_real_records_import_with_expected_skips(
    imported: tuple[ImportSummary, dict[str, TaskOut], BufferClient],
) -> None:
    summary, tasks, client = imported
    d = summary.to_dict()
    assert d["records"] == 8
    # Line 0 imports numpy, which the judge's sandbox (system python, -S) does not have.
    assert d["skipped"] == {
        "missing_package": 1,
        "nondeterministic": 1,
        "reference_failed": 1,
        "output_not_json": 1,
    }, d
    assert sorted(tasks) == ["codeio/0001", "codeio/0002", "codeio/0003", "codeio/0007"]
    assert summary.imported == 4 and summary.created == 4 and summary.updated == 0
    for task in tasks.values():
        assert task.tests.kind == "call" and task.tests.fn_name == "main_solution"
        assert len(task.tests.cases) == TESTS  # both generators have far more than 8 distinct inputs
        keys = [json.dumps(c.kwargs, sort_keys=True) for c in task.tests.cases]
        assert len(set(keys)) == TESTS and all(c.args == [] for c in task.tests.cases)
        assert task.metadata["reference"].startswith(("# import", "def main_solution"))
    assert tasks["codeio/0002"].difficulty == "interview"  # CodeIO difficulty 8
    assert tasks["codeio/0003"].difficulty is None  # the older record form has no difficulty
    assert "output is not plain JSON: dict[float" in summary.examples["output_not_json"][0]
    for skipped in ("codeio/0000", "codeio/0004", "codeio/0005", "codeio/0006"):
        with pytest.raises(NotFoundError):
            client.get_task(skipped)


def test_reimport_is_an_idempotent_upsert(
    imported: tuple[ImportSummary, dict[str, TaskOut], BufferClient], sample_records: list[Any]
) -> None:
    _, tasks, client = imported
    again = import_codeio(sample_records, config=RunnerConfig(tests=TESTS), sink=buffer_sink(client))
    assert (again.imported, again.created, again.updated) == (4, 0, 4)
    after = {t.id: t for t in client.list_tasks(dataset="codeio").items}
    assert {k: v.tests for k, v in after.items()} == {k: v.tests for k, v in tasks.items()}  # fixed seed


def _reference_body(code: str) -> str:
    tree = ast.parse(code)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main_solution")
    lines = code.splitlines()
    return "\n".join(lines[fn.body[0].lineno - 1 : fn.end_lineno]) + "\n"


def test_references_pass_and_a_broken_variant_is_graded(
    imported: tuple[ImportSummary, dict[str, TaskOut], BufferClient], judge: JudgeClient
) -> None:
    _, tasks, _ = imported
    for task in tasks.values():
        result = judge.judge(JudgeRequest(program=task.metadata["reference"], tests=task.tests))
        assert result.pass_rate == 1.0, (task.id, result.cases)
    # prompt + completion is a program too (the record at line 3 needs no import).
    task = tasks["codeio/0003"]
    program = task.prompt + _reference_body(task.metadata["reference"])
    assert judge.judge(JudgeRequest(program=program, tests=task.tests)).pass_rate == 1.0

    task = tasks["codeio/0002"]
    broken = (
        task.metadata["reference"] + "\n\n_reference = main_solution\n\n"
        "def main_solution(d):\n    if d % 3 == 0:\n        return {'result': 'impossible'}\n"
        "    return _reference(d)\n"
    )
    cases = task.tests.cases
    right = sum(1 for c in cases if c.kwargs["d"] % 3 != 0 or c.expected == {"result": "impossible"})
    assert 0 < right < len(cases), "the fixed seed's inputs must mix both kinds"
    result = judge.judge(JudgeRequest(program=broken, tests=task.tests))
    assert result.pass_rate == pytest.approx(right / len(cases)) and 0.0 < result.pass_rate < 1.0
    statuses = {c.status for c in result.cases}
    assert statuses == {"passed", "wrong_answer"}


# --- skip paths, on small synthetic records ---------------------------------------------------------

GEN = "def generate_inputs(rng: Random) -> dict:\n    return {'a': rng.randint(0, 10**6)}\n"


def _synthetic(index: int, code: str, generator: str = GEN) -> CodeIORecord:
    return parse_record(
        index,
        {
            "task_description": f"Synthetic record {index}.",
            "input_output_spec": "Input: a (int)\nOutput: anything",
            "code_sample": code,
            "input_generator": generator,
            "difficulty": 7,
        },
    )


SYNTHETIC: dict[str, tuple[str, str]] = {
    "missing_package": ("import not_a_package_btp_xyz\n\ndef main_solution(a):\n    return a\n", GEN),
    "reference_failed": ("def main_solution(a):\n    raise ValueError('always')\n", GEN),
    "timeout": ("def main_solution(a):\n    while True:\n        pass\n", GEN),
    "nondeterministic": ("import random\n\ndef main_solution(a):\n    return random.random()\n", GEN),
    "output_not_json": ("def main_solution(a):\n    return {a, a + 1}\n", GEN),
    "generator_failed": (
        "def main_solution(a):\n    return a\n",
        "def generate_inputs(rng):\n    return 1 / 0\n",
    ),
    "syntax_error": ("def main_solution(a:\n    return a\n", GEN),
    "inputs_not_json": (
        "def main_solution(a):\n    return 1\n",
        "def generate_inputs(rng):\n    return {'a': {1, 2}}\n",
    ),
}
NONDETERMINISTIC_ORDER = (
    "def main_solution(a):\n"
    "    words = {'apple', 'banana', 'cherry', 'date', 'elderberry', 'fig', 'grape', 'honeydew'}\n"
    "    return [w for w in words]\n"
)

KEY_ORDER = (
    "def main_solution(d):\n    return list(d)\n",
    "def generate_inputs(rng):\n    return {'d': {'x': 1, 'y': 2, 'z': rng.randint(0, 10**6)}}\n",
)

# One bit of randomness: 10 tests x (1 + 3 calls) agree by chance with probability 2**-30.
COIN = "import random\n\ndef main_solution(a):\n    return random.choice(['heads', 'tails'])\n"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with judge_sandbox(2) as run:
        yield run


def test_skip_paths(sandbox: Any) -> None:
    records = [_synthetic(i, code, gen) for i, (code, gen) in enumerate(SYNTHETIC.values())]
    records.append(_synthetic(len(records), NONDETERMINISTIC_ORDER))
    records.append(_synthetic(len(records), *KEY_ORDER))
    records.append(_synthetic(len(records), COIN))
    records.append(
        _synthetic(len(records), COIN, "def generate_inputs(rng):\n    return {'a': rng.randint(0, 1)}\n")
    )
    sunk: list[Any] = []
    summary = import_codeio(
        records,
        config=RunnerConfig(tests=10, case_time_s=0.3, task_time_s=20),
        sink=lambda tasks: (sunk.extend(tasks), (len(tasks), 0))[1],
        sandbox=sandbox,
    )
    expected = {reason: 1 for reason in SYNTHETIC}
    # random.random(), set order (another hash seed), input-dict key order, a coin flip (repeats) on
    # 10 inputs and on 2 inputs (12 calls each: chance agreement 2**-24)
    expected["nondeterministic"] = 5
    assert dict(summary.skipped) == expected, summary.examples
    assert summary.imported == 0 and sunk == []
    assert "not_a_package_btp_xyz" in summary.examples["missing_package"][0]


def test_uninterruptible_reference_hits_the_sandbox_limit(sandbox: Any) -> None:
    # Catastrophic backtracking runs inside C: the per-call timer cannot fire, the sandbox's limit does.
    code = "import re\n\ndef main_solution(a):\n    return bool(re.match('(a*)*b', 'a' * 40))\n"
    summary = import_codeio(
        [_synthetic(0, code)], config=RunnerConfig(tests=2, task_time_s=3), sink=None, sandbox=sandbox
    )
    assert dict(summary.skipped) == {"timeout": 1}


def test_partial_failures_duplicates_noise_and_tuples(sandbox: Any) -> None:
    partial = _synthetic(
        0,
        "import os\n\ndef main_solution(a):\n    print('noise', a)\n    os.write(1, b'raw noise\\n')\n"
        "    if a % 2:\n        raise ValueError('odd')\n    return (a, [a // 2])\n",
        "def generate_inputs(rng):\n    return {'a': rng.randint(0, 9)}\n",
    )
    outcomes: list[Any] = []
    summary = import_codeio(
        [partial],
        config=RunnerConfig(tests=10, max_attempts=40),
        sink=lambda tasks: (outcomes.extend(tasks), (len(tasks), 0))[1],
        sandbox=sandbox,
    )
    assert summary.imported == 1, summary.examples
    (task,) = outcomes
    values = sorted(c.kwargs["a"] for c in task.tests.cases)
    assert values == sorted(set(values)) and all(v % 2 == 0 for v in values)
    assert 1 <= len(values) <= 5
    assert all(c.expected == [c.kwargs["a"], [c.kwargs["a"] // 2]] for c in task.tests.cases)
    assert summary.dropped_cases["duplicate_input"] > 0 and summary.dropped_cases["reference_failed"] > 0


def test_generator_side_effects_are_not_the_references_input(sandbox: Any) -> None:
    # The generator writes a file the reference reads (CodeIO record 1870 does this): the judge will
    # run the reference's program in an empty directory, so the expected output must come from one too.
    rec = _synthetic(
        0,
        "import os\n\ndef main_solution(a):\n    return open('data.txt').read() if os.path.exists('data.txt') else 'missing'\n",
        "def generate_inputs(rng):\n    with open('data.txt', 'w') as f:\n        f.write('written')\n"
        "    return {'a': rng.randint(0, 10**6)}\n",
    )
    sunk: list[Any] = []
    summary = import_codeio(
        [rec], config=RunnerConfig(tests=3), sink=lambda t: (sunk.extend(t), (len(t), 0))[1], sandbox=sandbox
    )
    assert summary.imported == 1, summary.examples
    assert [c.expected for c in sunk[0].tests.cases] == ["missing"] * 3


def test_min_tests_skips_tasks_with_too_few_distinct_inputs(sandbox: Any) -> None:
    rec = _synthetic(
        0, "def main_solution(a):\n    return a\n", "def generate_inputs(rng):\n    return {'a': 1}\n"
    )
    summary = import_codeio([rec], config=RunnerConfig(tests=5, min_tests=2), sink=None, sandbox=sandbox)
    assert dict(summary.skipped) == {"too_few_tests": 1}


def test_cli_imports_into_the_configured_buffer(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    app.command()(codeio_command)
    monkeypatch.setenv("BTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BTP_DATABASE_URL", pg_url)
    monkeypatch.delenv("BTP_BUFFER_URL", raising=False)
    out = tmp_path / "summary.json"
    args = ["--path", str(DATA), "--only", "2,3,5", "--tests", "3", "--dataset", "codeio_cli"]
    result = CliRunner().invoke(app, [*args, "--summary-json", str(out), "--test-fraction", "1.0"])
    assert result.exit_code == 0, result.output
    assert "2 of 3 records imported" in result.output
    summary = json.loads(out.read_text())
    assert summary["tests_per_task"] == {"3": 2} and summary["splits"] == {"test": 2}
    assert summary["skipped"] == {"reference_failed": 1}
    with buffer_at(pg_url, tmp_path) as client:
        listed = client.list_tasks(dataset="codeio_cli", split="test")
    assert sorted(t.id for t in listed.items) == ["codeio_cli/0002", "codeio_cli/0003"]

    missing = CliRunner().invoke(app, ["--path", str(tmp_path / "nope.jsonl"), "--dry-run"])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_cli_dry_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    app.command()(codeio_command)
    monkeypatch.setenv("BTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BTP_DATABASE_URL", f"sqlite:///{tmp_path / 'buffer.sqlite3'}")
    result = CliRunner().invoke(app, ["--path", str(DATA), "--only", "3", "--tests", "2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 of 1 records imported" in result.output
    assert not (tmp_path / "buffer.sqlite3").exists()
    assert os.environ["BTP_DATA_DIR"] == str(tmp_path)
    # --json: the summary on stdout, a line per phase (with counts and a rate) on stderr
    result = CliRunner().invoke(app, ["--path", str(DATA), "--only", "3", "--tests", "2", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["records"] == 1 and body["imported"] == 1 and body["tests_per_task"] == {"2": 1}
    lines = result.stderr.splitlines()
    assert "codeio: 1 records through the sandbox: started, 1 to do" in lines, result.stderr
    assert any(x.startswith("codeio: 1 records through the sandbox: done 1/1 in ") and x.endswith("/s)") for x in lines)


NUMPY_REFERENCE = "import numpy as np\n\ndef main_solution(a):\n    return int(np.arange(a).sum())\n"


def test_a_judge_environment_keeps_tasks_that_need_its_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.judge.test_environments import make_scientific

    env = make_scientific()
    record = _synthetic(0, NUMPY_REFERENCE, "def generate_inputs(rng):\n    return {'a': rng.randint(0, 50)}\n")
    config = RunnerConfig(tests=5, min_tests=2)
    with judge_sandbox(1) as bare:  # the bare interpreter: skipped, as today
        summary = import_codeio([record], config=config, sink=None, sandbox=bare)
    assert dict(summary.skipped) == {"missing_package": 1}
    monkeypatch.setenv("BTP_JUDGE_ENVIRONMENTS", json.dumps({"scientific": str(env)}))
    sunk: list[Any] = []
    summary = import_codeio(
        [record], config=config, sink=lambda tasks: (sunk.extend(tasks), (len(tasks), 0))[1], workers=1,
        environment="scientific",
    )
    assert summary.imported == 1 and dict(summary.skipped) == {}
    task = sunk[0]
    assert task.tests.environment == "scientific" and len(task.tests.cases) >= 2
    with pytest.raises(ValueError, match="unknown judge environment 'nope'"):
        import_codeio([record], config=config, sink=None, workers=1, environment="nope")


def test_a_run_takes_its_codeio_slice_from_the_records_file() -> None:
    """`btp run --dataset codeio --dataset-path codeio=FILE`: only the slice's records run in the sandbox, and
    they are the tasks `select` keeps (the same hash order), next to another data set."""
    from services.pipeline.run.config import RunConfig
    from services.pipeline.run.loop import load_tasks

    cfg = RunConfig(name="mix", model="m", datasets=["codeio", "mbpp"], dataset_paths={"codeio": str(DATA)},
                    train_size=2, test_size=2, test_fraction=0.5)  # fmt: skip
    train, test = load_tasks(cfg)
    codeio = [t for t in train + test if t.dataset == "codeio"]
    assert codeio and all(t.tests.kind == "call" and len(t.tests.cases) == 10 for t in codeio)  # type: ignore[union-attr]
    assert {t.id for t in codeio} <= {"codeio/0001", "codeio/0002", "codeio/0003", "codeio/0007"}  # the importable ones
    assert sum(t.dataset == "mbpp" for t in train) == 2 and sum(t.dataset == "mbpp" for t in test) == 2
