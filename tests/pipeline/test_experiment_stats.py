"""The two-way (seed and task) bootstrap of :mod:`services.pipeline.experiments.stats`."""

from __future__ import annotations

import pytest

from services.pipeline.experiments.stats import (
    bootstrap_ci,
    compare,
    markdown_table,
    seed_task_ci,
    seed_task_ci_diff,
    summarize_variant,
)


def _eval(scores: list[float]) -> dict[str, object]:
    return {"per_task": {f"t{i:02d}": {"pass_rate": x, "passed_all": x == 1.0} for i, x in enumerate(scores)}}


def test_one_seed_is_the_task_bootstrap() -> None:
    assert seed_task_ci([[0.5] * 30]) == (0.5, 0.5)
    lo, hi = seed_task_ci([[0.0, 1.0] * 20], draws=1000)
    blo, bhi = bootstrap_ci([0.0, 1.0] * 20, draws=1000)
    assert abs(lo - blo) < 0.06 and abs(hi - bhi) < 0.06
    assert 0.3 < lo < 0.5 < hi < 0.7


def test_training_variance_widens_the_interval() -> None:
    # every task agrees within a seed, the seeds disagree: resampling tasks alone sees no uncertainty
    rows = [[0.0] * 40, [1.0] * 40, [0.0] * 40, [1.0] * 40, [0.5] * 40]
    averaged = [sum(col) / len(col) for col in zip(*rows, strict=True)]
    assert bootstrap_ci(averaged, draws=500) == (0.5, 0.5)
    lo, hi = seed_task_ci(rows, draws=2000)
    assert lo < 0.25 and hi > 0.75
    # seeds that agree leave the task-level interval
    same = [[0.0, 1.0] * 20] * 5
    slo, shi = seed_task_ci(same, draws=1000)
    assert 0.3 < slo < 0.5 < shi < 0.7


def test_difference_of_two_recipes() -> None:
    a = [[0.0, 1.0] * 20, [0.0, 1.0] * 20]
    lo, hi = seed_task_ci_diff(a, [[1.0, 0.0] * 20, [0.0, 1.0] * 20], draws=500)
    assert lo < 0.0 < hi  # the same mean, other seeds: an interval around 0
    shifted = [[x + 0.2 for x in row] for row in a]
    lo, hi = seed_task_ci_diff(shifted, a, draws=500)
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)  # the same tasks on both sides: exact
    with pytest.raises(ValueError, match="same tasks"):
        seed_task_ci_diff([[1.0, 0.0]], [[1.0]])
    out = compare([_eval([1.0, 0.0, 1.0, 0.5])] * 3, [_eval([0.0, 0.0, 1.0, 0.5])] * 2, draws=300)
    assert out["seeds"] == [3, 2] and out["tasks"] == 4
    assert out["pass_rate"]["diff"] == pytest.approx(0.25) and out["accuracy"]["diff"] == pytest.approx(0.25)
    lo, hi = out["pass_rate"]["ci"]
    assert 0.0 <= lo <= 0.25 <= hi <= 1.0  # one task in four carries the difference


def test_summary_reports_per_seed_values_and_both_intervals() -> None:
    base = _eval([0.0] * 20)
    seeds = [_eval([1.0] * 20), _eval([0.0] * 20), _eval([1.0] * 10 + [0.0] * 10)]
    s = summarize_variant(seeds, base, draws=1000)
    pr = s["pass_rate"]
    assert s["seeds"] == 3 and pr["per_seed"] == [1.0, 0.0, 0.5] and pr["per_seed_delta"] == [1.0, 0.0, 0.5]
    assert pr["mean"] == pytest.approx(0.5) and pr["delta"] == pytest.approx(0.5)
    assert pr["seed_sd"] == pytest.approx(0.5)
    # the task-only interval is narrow (every task improved by 1/3 to 2/3), the seed-and-task one is not
    tlo, thi = pr["delta_ci_tasks"]
    lo, hi = pr["delta_ci"]
    assert thi - tlo < 0.35 and lo <= 0.1 and hi >= 0.9
    assert lo <= pr["delta"] <= hi and pr["ci"][0] <= pr["mean"] <= pr["ci"][1]
    summary = {"base": summarize_variant([base], base, draws=200), "variants": {"v": s}}
    md = markdown_table(summary)
    assert "| v |" in md and "100.0 / 0.0 / 50.0" in md and "two-way bootstrap" in md
