"""Pure parts of the CodeIO importer: reading, parsing, prompt, buckets, split, result evaluation."""

from __future__ import annotations

import ast
import gzip
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.pipeline.datasets.codeio.box import script as codeio_script
from services.pipeline.datasets.codeio.box.script import MARKER
from services.pipeline.datasets.codeio.execution import RunnerConfig, build_script, evaluate, parse_stdout
from services.pipeline.datasets.codeio.importer import ImportSummary, build_task
from services.pipeline.datasets.codeio.records import (
    WHEEL_MEMBER,
    CodeIODataError,
    CodeIORecord,
    MalformedRecord,
    build_prompt,
    difficulty_bucket,
    find_or_download_wheel,
    input_key,
    iter_records,
    main_solution_signature,
    parse_record,
    precheck,
    read_raw_lines,
    split_for,
    task_id,
)

DATA = Path(__file__).parent / "data" / "codeio" / "sample.jsonl"


def _record(**overrides: object) -> CodeIORecord:
    raw = {
        "task_description": "Add two numbers.",
        "input_output_spec": "Input: a (int), b (int)\nOutput: int",
        "code_sample": "def main_solution(a, b):\n    return a + b\n",
        "input_generator": "def generate_inputs(rng):\n    return {'a': rng.randint(0, 9), 'b': 1}\n",
        "difficulty": 8,
    }
    raw.update(overrides)
    return parse_record(int(str(overrides.get("index", 0))), raw)


@dataclass
class _Run:
    """The shape of the judge sandbox's RunResult, filled in by hand for the evaluation rules."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = 0
    timed_out: bool = False
    memory_exceeded: bool = False
    output_exceeded: bool = False
    wall_ms: float = 12.0


def _stdout(result: dict[str, object]) -> str:
    return "noise printed by the record\n" + MARKER + json.dumps(result) + "\n"


def _eq(a: object, b: object) -> bool:
    return a == b


def test_sample_file_parses_and_has_both_generator_forms() -> None:
    records = list(iter_records(read_raw_lines(DATA)))
    assert len(records) == 8
    assert all(isinstance(r, CodeIORecord) for r in records)
    good = [r for r in records if isinstance(r, CodeIORecord)]
    assert [r.index for r in good] == list(range(8))
    assert good[3].difficulty is None and "random: Random" in good[3].input_generator
    assert good[0].difficulty == 8


def test_reads_wheel_member_gzip_and_json_array(tmp_path: Path) -> None:
    lines = DATA.read_text().splitlines()
    wheel = tmp_path / "reasoning_gym-0.1.25-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(WHEEL_MEMBER, gzip.compress("\n".join(lines).encode()))
    gz = tmp_path / "codeio.jsonl.gz"
    gz.write_bytes(gzip.compress(DATA.read_bytes()))
    arr = tmp_path / "codeio.json"
    arr.write_text(json.dumps([json.loads(line) for line in lines]))
    for path in (wheel, gz, arr, DATA):
        assert len(read_raw_lines(path)) == 8, path


def test_unreadable_sources_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(CodeIODataError, match="no such file"):
        read_raw_lines(tmp_path / "missing.jsonl")
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("x.txt", "x")
    with pytest.raises(CodeIODataError, match="has no"):
        read_raw_lines(wheel)
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(CodeIODataError):
        read_raw_lines(bad)


def test_malformed_lines_are_values_not_crashes() -> None:
    lines = [
        "{not json",
        json.dumps([1]),
        json.dumps({"task_description": "x"}),
        DATA.read_text().splitlines()[0],
    ]
    out = list(iter_records(lines))
    assert [type(o).__name__ for o in out] == [
        "MalformedRecord",
        "MalformedRecord",
        "MalformedRecord",
        "CodeIORecord",
    ]
    with pytest.raises(MalformedRecord, match="difficulty"):
        _record(difficulty="hard")
    with pytest.raises(MalformedRecord, match="difficulty"):
        _record(difficulty=True)


@pytest.mark.parametrize(
    ("difficulty", "bucket"),
    [
        (None, None),
        (1, "introductory"),
        (7, "introductory"),
        (8, "interview"),
        (9, "competition"),
        (10, "competition"),
    ],
)
def test_difficulty_buckets(difficulty: int | None, bucket: str | None) -> None:
    assert difficulty_bucket(difficulty) == bucket


def test_split_is_deterministic_content_based_and_near_the_fraction() -> None:
    records = [
        _record(code_sample=f"def main_solution(a, b):\n    return a + b + {i}\n") for i in range(2000)
    ]
    splits = [split_for(r, 0.1) for r in records]
    assert splits == [split_for(r, 0.1) for r in records]
    assert 150 <= splits.count("test") <= 250
    assert all(split_for(r, 0.0) == "train" for r in records[:50])
    assert all(split_for(r, 1.0) == "test" for r in records[:50])
    # Same reference, different position: same split (no train/test leak of a duplicated record).
    a, b = _record(index=1), _record(index=2)
    assert split_for(a, 0.5) == split_for(b, 0.5)
    assert task_id("codeio", b) == "codeio/0002"


def test_signature_and_prompt_parse_as_python() -> None:
    rec = _record(
        task_description='Tricky """quotes""" and a \\N backslash \\x and tabs\tinside.',
        code_sample="import math\n\ndef helper():\n    pass\n\ndef main_solution(a: int, b=2, *rest, k: str = 'x') -> int:\n    return a\n",
    )
    assert (
        main_solution_signature(rec.code_sample)
        == "def main_solution(a: int, b=2, *rest, k: str='x') -> int:"
    )
    prompt = build_prompt(rec)
    tree = ast.parse(prompt + "    pass\n")
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.name == "main_solution"
    doc = ast.get_docstring(fn) or ""
    assert '"""quotes"""' in doc and "\\N backslash" in doc and "Input: a (int)" in doc
    assert main_solution_signature("def other():\n    pass\n") is None
    assert main_solution_signature("def (:") is None
    with pytest.raises(MalformedRecord):
        build_prompt(_record(code_sample="def other():\n    pass\n"))
    assert precheck(_record(code_sample="def other():\n    pass\n")) == "malformed_record"
    assert precheck(_record(code_sample="def main_solution(:\n")) == "syntax_error"
    assert precheck(_record(input_generator="def generate_inputs(rng)\n")) == "syntax_error"
    assert precheck(_record()) is None


def test_input_key_is_canonical() -> None:
    assert input_key('{"b": 1, "a": [1, 2.5]}') == input_key('{"a":[1,2.5],"b":1}')
    assert input_key('{"a": 1}') != input_key('{"a": 1.5}')


def test_script_is_python_and_carries_the_record() -> None:
    rec = _record()
    script = build_script(rec, RunnerConfig(tests=7, seed=3))
    ast.parse(script)
    assert "_btp_codeio_main(" in script and "rng.randint(0, 9)" in script
    assert '\\"tests\\": 7' in script or '"tests": 7' in script


def _ok_result(
    cases: list[tuple[str, str]], rerun: list[dict[str, object]] | None = None
) -> dict[str, object]:
    result: dict[str, object] = {
        "status": "ok",
        "cases": [{"input": i, "output": o, "ms": 0.5} for i, o in cases],
        "dropped": {"duplicate_input": 2},
        "attempts": 5,
    }
    result["rerun"] = {
        "status": "ok",
        "outputs": rerun if rerun is not None else [{"output": o} for _, o in cases],
    }
    return result


def test_evaluate_builds_kwargs_cases() -> None:
    run = _Run(stdout=_stdout(_ok_result([('{"a":1,"b":1}', "2"), ('{"a":2,"b":1}', "3")])))
    out = evaluate(4, run, RunnerConfig(), _eq)
    assert out.ok and out.index == 4 and out.attempts == 5
    assert [(c.args, c.kwargs, c.expected) for c in out.cases] == [
        ([], {"a": 1, "b": 1}, 2),
        ([], {"a": 2, "b": 1}, 3),
    ]
    assert out.dropped == {"duplicate_input": 2}


def test_evaluate_skip_reasons() -> None:
    cfg = RunnerConfig()
    assert evaluate(0, _Run(timed_out=True, exit_code=None), cfg, _eq).skip_reason == "timeout"
    assert evaluate(0, _Run(memory_exceeded=True), cfg, _eq).skip_reason == "memory_exceeded"
    assert evaluate(0, _Run(output_exceeded=True), cfg, _eq).skip_reason == "output_too_large"
    assert evaluate(0, _Run(stdout="garbage", exit_code=1), cfg, _eq).skip_reason == "crashed"
    missing = {"status": "missing_package", "detail": "ModuleNotFoundError: torchvision", "cases": []}
    out = evaluate(0, _Run(stdout=_stdout(missing)), cfg, _eq)
    assert (out.skip_reason, out.detail) == ("missing_package", "ModuleNotFoundError: torchvision")
    failed = {"status": "ok", "cases": [], "dropped": {"reference_failed": 4, "duplicate_input": 9}}
    assert evaluate(0, _Run(stdout=_stdout(failed)), cfg, _eq).skip_reason == "reference_failed"
    disagree = _ok_result([('{"a":1}', "2"), ('{"a":2}', "3")], [{"output": "2"}, {"output": "4"}])
    out = evaluate(0, _Run(stdout=_stdout(disagree)), cfg, _eq)
    assert out.skip_reason == "nondeterministic" and not out.cases
    raised = _ok_result([('{"a":1}', "2")], [{"error": "reference_failed"}])
    assert evaluate(0, _Run(stdout=_stdout(raised)), cfg, _eq).skip_reason == "nondeterministic"
    rerun_timeout = {**_ok_result([('{"a":1}', "2")]), "rerun": {"status": "timeout"}}
    assert evaluate(0, _Run(stdout=_stdout(rerun_timeout)), cfg, _eq).skip_reason == "timeout"


def test_evaluate_checks_every_repeat_of_the_second_run() -> None:
    cfg = RunnerConfig()
    same = _ok_result([('{"a":1}', '"x"')], [{"output": '"x"', "variants": []}])
    assert evaluate(0, _Run(stdout=_stdout(same)), cfg, _eq).ok
    coin = _ok_result([('{"a":1}', '"x"')], [{"output": '"x"', "variants": ['"y"']}])
    out = evaluate(0, _Run(stdout=_stdout(coin)), cfg, _eq)
    assert out.skip_reason == "nondeterministic" and '"y"' in out.detail
    flaky = _ok_result(
        [('{"a":1}', '"x"')], [{"output": '"x"', "variants": [], "repeat_error": "reference_failed"}]
    )
    assert evaluate(0, _Run(stdout=_stdout(flaky)), cfg, _eq).skip_reason == "nondeterministic"
    slow_repeat = _ok_result(
        [('{"a":1}', '"x"')], [{"output": '"x"', "variants": [], "repeat_error": "timeout"}]
    )
    assert evaluate(0, _Run(stdout=_stdout(slow_repeat)), cfg, _eq).ok


def test_evaluate_drops_slow_cases_and_enforces_min_tests() -> None:
    slow = _ok_result([('{"a":1}', "2"), ('{"a":2}', "3")], [{"output": "2"}, {"error": "timeout"}])
    out = evaluate(0, _Run(stdout=_stdout(slow)), RunnerConfig(), _eq)
    assert out.ok and len(out.cases) == 1 and out.dropped["timeout"] == 1
    out = evaluate(0, _Run(stdout=_stdout(slow)), RunnerConfig(min_tests=2), _eq)
    assert out.skip_reason == "too_few_tests" and out.cases == []


def test_evaluate_uses_the_given_comparison() -> None:
    close = _ok_result([('{"a":1}', "0.1")], [{"output": "0.10000000000000002"}])
    assert evaluate(0, _Run(stdout=_stdout(close)), RunnerConfig(), _eq).skip_reason == "nondeterministic"
    tolerant = evaluate(0, _Run(stdout=_stdout(close)), RunnerConfig(), lambda a, b: abs(a - b) < 1e-9)
    assert tolerant.ok and tolerant.cases[0].expected == 0.1


def test_parse_stdout_takes_the_last_marker_line() -> None:
    assert parse_stdout("x\n" + MARKER + '{"a": 1}\n' + MARKER + '{"a": 2}\n') == {"a": 2}
    assert parse_stdout(MARKER + "{broken") is None
    assert parse_stdout("") is None


def test_build_task_and_summary() -> None:
    rec = _record(index=12, difficulty=9)
    run = _Run(stdout=_stdout(_ok_result([('{"a":1,"b":1}', "2")])))
    outcome = evaluate(rec.index, run, RunnerConfig(), _eq)
    task = build_task(rec, outcome, dataset="codeio", test_fraction=0.0)
    assert task.id == "codeio/0012" and task.split == "train" and task.difficulty == "competition"
    assert task.tests.kind == "call" and task.tests.fn_name == "main_solution"
    assert task.metadata["codeio_difficulty"] == 9 and task.metadata["call_style"] == "kwargs"
    json.dumps(task.model_dump())  # the wire form is plain JSON
    summary = ImportSummary(records=3, imported=1, elapsed_s=2.0)
    summary.tests_per_task[1] += 1
    summary.add_skip("timeout", "record 1: slow")
    summary.add_skip("timeout", "record 2: slow")
    d = summary.to_dict()
    assert d["skipped"] == {"timeout": 2} and d["tests_per_task"] == {"1": 1} and d["records_per_s"] == 1.5
    assert "skipped timeout: 2" in summary.render()


# --- property tests (hypothesis): the prompt always parses; the JSON filter is exact ----------------

_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(description=st.text(min_size=1), spec=st.text(min_size=1))
def test_prompt_parses_for_any_text(description: str, spec: str) -> None:
    rec = _record(task_description=description + "x", input_output_spec=spec + "y")
    tree = ast.parse(build_prompt(rec) + "    pass\n")
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.name == "main_solution"
    doc = ast.get_docstring(fn, clean=False) or ""
    assert rec.task_description.split()[0] in doc if rec.task_description.split() else True


@settings(max_examples=80, deadline=None)
@given(value=_json_values)
def test_plain_json_values_round_trip(value: object) -> None:
    text = codeio_script._to_json(value)
    assert text is not None and json.loads(text) == value
    assert codeio_script._to_json({"k": value}, canonical=True) == json.dumps(
        {"k": value}, sort_keys=True, separators=(",", ":")
    )


def test_non_json_values_are_refused() -> None:
    for bad in (
        {1, 2},
        {1.5: "float key"},
        {True: 1},
        {1: "a", "1": "b"},
        float("nan"),
        [float("inf")],
        object(),
        b"bytes",
        1j,
        {"a": (1, {2})},
    ):
        assert codeio_script._to_json(bad) is None, bad
    assert codeio_script._to_json((1, [2, (3,)])) == "[1, [2, [3]]]"
    assert codeio_script._to_json({1: "int key"}) == '{"1": "int key"}'


def test_wheel_is_taken_from_the_cache_or_the_failure_is_explained(tmp_path: Path) -> None:
    cached = tmp_path / "reasoning_gym-0.1.25-py3-none-any.whl"
    cached.write_bytes(b"")
    assert find_or_download_wheel(tmp_path) == cached
    with pytest.raises(CodeIODataError, match="pass --path"):
        find_or_download_wheel(tmp_path / "empty", version="0.0.0.dev999")


def test_second_run_sees_input_dicts_in_reverse_key_order() -> None:
    value = {"a": 1, "b": [{"x": 1, "y": {"p": 0, "q": 1}}], "c": None}
    flipped = codeio_script._reversed_dicts(value)
    assert flipped == value
    assert list(flipped) == ["c", "b", "a"] and list(flipped["b"][0]) == ["y", "x"]
    assert list(flipped["b"][0]["y"]) == ["q", "p"]
