"""The paper's two metrics over a held-out split, overall, per data set and per difficulty.

- pass rate: the mean, over tasks, of the fraction of test cases the greedy program passes;
- accuracy: the fraction of tasks whose greedy program passes every test case.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskOutcome:
    """One task's greedy program, judged."""

    task_id: str
    dataset: str
    difficulty: str | None
    pass_rate: float
    passed_all: bool


def _summary(outcomes: list[TaskOutcome]) -> dict[str, Any]:
    n = len(outcomes)
    return {
        "tasks": n,
        "pass_rate": sum(o.pass_rate for o in outcomes) / n if n else 0.0,
        "accuracy": sum(o.passed_all for o in outcomes) / n if n else 0.0,
    }


def summarize(outcomes: list[TaskOutcome]) -> dict[str, Any]:
    """Overall, per-dataset and per-difficulty pass rate and accuracy."""
    by_dataset: dict[str, list[TaskOutcome]] = defaultdict(list)
    by_difficulty: dict[str, list[TaskOutcome]] = defaultdict(list)
    for o in outcomes:
        by_dataset[o.dataset].append(o)
        if o.difficulty is not None:
            by_difficulty[o.difficulty].append(o)
    result = _summary(outcomes)
    result["by_dataset"] = {k: _summary(v) for k, v in sorted(by_dataset.items())}
    result["by_difficulty"] = {k: _summary(v) for k, v in sorted(by_difficulty.items())}
    return result


def histogram(values: list[float], bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> dict[str, list[Any]]:
    """Counts of values in ``bins`` equal bins over [lo, hi] (the last bin is closed)."""
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        i = min(bins - 1, max(0, int((v - lo) / width)))
        counts[i] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}
