"""Hypothesis fuzz of the driver's inputs: importers never crash on arbitrary records (each record is a
task or a named error), and bad `btp run` / `btp import` options end in a clear error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from services.pipeline.cli.main import app
from services.pipeline.datasets.loaders import load_apps, load_codecontests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
apps_like = st.fixed_dictionaries(
    {},
    optional={
        "problem_id": st.integers(0, 10**6) | st.text(max_size=5),
        "question": st.text(max_size=30),
        "input_output": json_values
        | st.builds(lambda i, o, f: json.dumps({"inputs": i, "outputs": o, **({"fn_name": f} if f else {})}),
                    st.lists(json_values, max_size=3), st.lists(json_values, max_size=3),
                    st.sampled_from(["", "f", "bad name", "Solution"])),
        "difficulty": json_values,
        "starter_code": st.text(max_size=20) | st.none(),
    },
)
cc_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=10) | st.integers(),
        "description": st.text(max_size=20),
        "public_tests": json_values
        | st.builds(lambda i, o: {"input": i, "output": o}, st.lists(st.text(max_size=5), max_size=3),
                    st.lists(st.text(max_size=5), max_size=3)),
        "private_tests": json_values,
        "difficulty": st.integers(-2, 40) | st.text(max_size=4) | st.none(),
    },
)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp: Path, records: list[Any], junk: bool) -> Path:
    path = tmp / f"f{abs(hash(json.dumps(records, default=str))) % 10**9}.jsonl"
    lines = [json.dumps(r) for r in records] + (["{not json", "[1, 2]"] if junk else [])
    path.write_text("\n".join(lines) + "\n")
    return path


@FUZZ
@given(records=st.lists(apps_like, max_size=5), junk=st.booleans())
def test_apps_importer_never_crashes(tmp_path: Path, records: list[Any], junk: bool) -> None:
    path = _write(tmp_path, records, junk)
    result = load_apps(path)
    assert len(result.tasks) + len(result.errors) == len(records) + (2 if junk else 0)
    for err in result.errors:
        assert str(err).startswith(path.name + ":")


@FUZZ
@given(records=st.lists(cc_like, max_size=5), junk=st.booleans())
def test_codecontests_importer_never_crashes(tmp_path: Path, records: list[Any], junk: bool) -> None:
    path = _write(tmp_path, records, junk)
    result = load_codecontests(path)
    assert len(result.tasks) + len(result.errors) == len(records) + (2 if junk else 0)


bad_run_args = st.one_of(
    st.tuples(st.just("--scheme"), st.text(min_size=1, max_size=8).filter(lambda s: s not in ("rank", "proportional", "uniform") and not s.startswith("-"))),
    st.tuples(st.just("--possibility"), st.text(min_size=1, max_size=8).filter(lambda s: s not in ("sequence", "token_mean", "beam_softmax") and not s.startswith("-"))),
    st.tuples(st.just("--alpha"), st.floats(1.0001, 1e6).map(str)),
    st.tuples(st.just("--k"), st.integers(17, 10**6).map(str)),
    st.tuples(st.just("--dataset"), st.text(min_size=1, max_size=8).filter(lambda s: s not in ("humaneval", "mbpp") and not s.startswith("-"))),
    st.tuples(st.just("--name"), st.text(min_size=1, max_size=8).filter(lambda s: any(c in s for c in "/ \\:") and not s.startswith("-"))),
    st.tuples(st.just("--dataset-path"), st.text(max_size=8).filter(lambda s: "=" not in s and not s.startswith("-"))),
)  # fmt: skip


@FUZZ
@given(arg=bad_run_args)
def test_bad_run_options_are_clear_errors(data_dir: Path, arg: tuple[str, str]) -> None:
    result = CliRunner().invoke(app, ["run", *arg])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{arg}: {result.exception!r}")
    runs = data_dir / "runs"
    assert not runs.exists() or not any(p.joinpath("state.json").exists() and "eval:0" in p.joinpath("state.json").read_text()
                                        for p in runs.iterdir())  # fmt: skip
