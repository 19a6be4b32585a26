"""The alpha sweep (the paper's Figure 1): the same run for several alpha values of Eq. 6.

Runs are named ``<sweep>-alpha<a>``. The evaluation before training does not depend on alpha, so the
first run's round-0 metrics are copied into the others (marked done) instead of being measured again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..settings import Settings
from .config import RunConfig
from .folder import RunFolder


def run_name(base: str, alpha: float) -> str:
    return f"{base}-alpha{alpha:g}"


def run_sweep(
    base: RunConfig,
    alphas: list[float],
    settings: Settings,
    execute: Callable[[RunConfig, bool], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Run ``execute(cfg, resume)`` once per alpha; return one summary row per alpha."""
    runs = settings.runs_dir()
    baseline: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    for alpha in alphas:
        cfg = RunConfig.model_validate(base.model_dump() | {"alpha": alpha, "name": run_name(base.name, alpha)})
        exists = (runs / cfg.name / "config.json").exists()
        if not exists and baseline is not None:
            folder = RunFolder.create(runs, cfg)
            folder.save_metrics(0, baseline)
            folder.mark("eval:0")
            exists = True
        metrics = execute(cfg, exists)
        evals = [m for m in metrics if "eval" in m]
        if baseline is None and evals and evals[0]["round"] == 0:
            baseline = {k: v for k, v in evals[0].items() if k in ("eval", "eval_seconds")}
        first, last = evals[0]["eval"], evals[-1]["eval"]
        results.append({"alpha": alpha, "run": cfg.name, "baseline_pass_rate": first["pass_rate"],
                        "baseline_accuracy": first["accuracy"], "pass_rate": last["pass_rate"],
                        "accuracy": last["accuracy"]})  # fmt: skip
    return results
