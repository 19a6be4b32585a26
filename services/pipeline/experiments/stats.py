"""Statistics and rendering of an experiment: bootstrap confidence intervals over tasks, tables, plots.

Every variant is evaluated on the same held-out tasks as the base model, so the comparison is paired:
the CI of a variant's *change* resamples tasks (with replacement) and recomputes the mean difference on
the same draw, which removes the between-task variance that dominates small slices. With several seeds,
a task's score is first averaged over seeds (the seeds are the repeated measurements of one task).
No torch, no FastAPI here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def mean(xs: Sequence[float]) -> float:
    """The arithmetic mean (0 for an empty sequence)."""
    return sum(xs) / len(xs) if xs else 0.0


def bootstrap_ci(
    values: Sequence[float], *, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (tasks resampled with replacement)."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    lo = means[int((1 - level) / 2 * draws)]
    hi = means[min(draws - 1, int((1 + level) / 2 * draws))]
    return (lo, hi)


def per_task_scores(evals: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Per-task score averaged over seeds; ``key`` is ``pass_rate`` or ``passed_all``."""
    out: dict[str, list[float]] = {}
    for ev in evals:
        for task_id, outcome in ev["per_task"].items():
            out.setdefault(task_id, []).append(float(outcome[key]))
    return {t: mean(v) for t, v in out.items()}


def summarize_variant(
    evals: Sequence[dict[str, Any]], base: dict[str, Any], *, draws: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Pass rate and accuracy with CIs, and the paired change against ``base`` with its CI."""
    result: dict[str, Any] = {"seeds": len(evals)}
    for metric, key in (("pass_rate", "pass_rate"), ("accuracy", "passed_all")):
        scores = per_task_scores(evals, key)
        base_scores = per_task_scores([base], key)
        tasks = sorted(scores)
        values = [scores[t] for t in tasks]
        deltas = [scores[t] - base_scores.get(t, 0.0) for t in tasks]
        per_seed = [mean([float(o[key]) for o in ev["per_task"].values()]) for ev in evals]
        result[metric] = {
            "mean": mean(values),
            "ci": bootstrap_ci(values, draws=draws, seed=seed),
            "delta": mean(deltas),
            "delta_ci": bootstrap_ci(deltas, draws=draws, seed=seed + 1),
            "per_seed": per_seed,
            "improved_tasks": sum(d > 0 for d in deltas),
            "worse_tasks": sum(d < 0 for d in deltas),
        }
    return result


def _fmt(m: dict[str, Any], pct: bool = True) -> str:
    lo, hi = m["ci"]
    return f"{100 * m['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f"{m['mean']:.3f}"


def _fmt_delta(m: dict[str, Any]) -> str:
    lo, hi = m["delta_ci"]
    return f"{100 * m['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def markdown_table(summary: dict[str, Any]) -> str:
    """The headline table: one row per variant, pass rate and accuracy (%) with 95% CIs and paired deltas."""
    lines = [
        "| variant | description | seeds | pass rate % [95% CI] | Δ pass rate (paired) | accuracy % [95% CI] "
        "| Δ accuracy (paired) | tasks better / worse (pass rate) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = summary["base"]
    lines.append(
        f"| base | {summary.get('base_description', 'before fine-tuning')} | - | {_fmt(base['pass_rate'])} | "
        f"- | {_fmt(base['accuracy'])} | - | - |"
    )
    for name, v in summary["variants"].items():
        pr, acc = v["pass_rate"], v["accuracy"]
        lines.append(
            f"| {name} | {v.get('description', '')} | {v['seeds']} | {_fmt(pr)} | {_fmt_delta(pr)} | {_fmt(acc)} | "
            f"{_fmt_delta(acc)} | {pr['improved_tasks']} / {pr['worse_tasks']} |"
        )
    table = "\n".join(lines) + "\n"
    curves = rounds_table(summary)
    return table + ("\nHeld-out pass rate / accuracy % after each round (mean over seeds):\n\n" + curves
                    if curves else "")


def round_curve(per_seed: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-round held-out scores and buffer growth, averaged over seeds (empty for one-round runs)."""
    if not per_seed:
        return []
    out = []
    for i in range(min(len(r) for r in per_seed)):
        rows = [r[i] for r in per_seed]
        resampled = [row["resample"] for row in rows if row.get("resample")]
        out.append(
            {
                "round": i + 1,
                "pass_rate": mean([row["pass_rate"] for row in rows]),
                "accuracy": mean([row["accuracy"] for row in rows]),
                "per_seed_pass_rate": [row["pass_rate"] for row in rows],
                "per_seed_accuracy": [row["accuracy"] for row in rows],
                "resample_mean_pass_rate": mean([x["mean_pass_rate"] for x in resampled]) if resampled else None,
                "resample_tasks_solved": mean([x["tasks_solved"] for x in resampled]) if resampled else None,
                "resample_new_programs": mean([x["new_programs"] for x in resampled]) if resampled else None,
            }
        )
    return out


def rounds_table(summary: dict[str, Any]) -> str:
    """Held-out pass rate / accuracy (%) after each round, one row per multi-round variant."""
    rows = {n: v["rounds"] for n, v in summary["variants"].items() if len(v.get("rounds") or []) > 1}
    if not rows:
        return ""
    n_rounds = max(len(r) for r in rows.values())
    base = summary["base"]
    head = " | ".join(f"round {i + 1}" for i in range(n_rounds))
    lines = [
        f"| variant | base | {head} |",
        "|---|---|" + "---|" * n_rounds,
    ]
    b = f"{100 * base['pass_rate']['mean']:.1f} / {100 * base['accuracy']['mean']:.1f}"
    for name, curve in rows.items():
        cells = [f"{100 * c['pass_rate']:.1f} / {100 * c['accuracy']:.1f}" for c in curve]
        lines.append(f"| {name} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rounds(summary: dict[str, Any], path: Path) -> Path | None:
    """Held-out pass rate and accuracy after each self-improvement round, one line per variant."""
    rows = {n: v["rounds"] for n, v in summary["variants"].items() if len(v.get("rounds") or []) > 1}
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    n_rounds = max(len(c) for c in rows.values())
    for ax, metric in zip(axes, ("pass_rate", "accuracy"), strict=True):
        base = 100 * summary["base"][metric]["mean"]
        for i, (name, curve) in enumerate(rows.items()):
            ax.plot([0] + [c["round"] for c in curve], [base] + [100 * c[metric] for c in curve], marker="o",
                    color=colors[(2 * i) % 20 + (i // 10) % 2], ls="-" if i < 10 else "--", label=name)
        ax.set_xticks(range(n_rounds + 1))
        ax.set_xlabel("round (0 = base model)")
        ax.set_ylabel(f"held-out {metric.replace('_', ' ')} %")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_variants(summary: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of every variant's paired change in pass rate and accuracy with CIs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is optional
        return None
    names = list(summary["variants"])
    if not names:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 1.6))
    for ax, metric in zip(axes, ("pass_rate", "accuracy"), strict=True):
        ds = [100 * summary["variants"][n][metric]["delta"] for n in names]
        cis = [summary["variants"][n][metric]["delta_ci"] for n in names]
        err = [
            [d - 100 * lo for d, (lo, _) in zip(ds, cis, strict=True)],
            [100 * hi - d for d, (_, hi) in zip(ds, cis, strict=True)],
        ]
        ax.barh(range(len(names)), ds, xerr=err, color="tab:blue", alpha=0.7, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {metric.replace('_', ' ')} vs base (points, 95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_alpha(summary: dict[str, Any], path: Path) -> Path | None:
    """The paper's Figure 1 at our scale: held-out pass rate and accuracy against alpha."""
    points = sorted(
        (v["alpha"], v)
        for v in summary["variants"].values()
        if v.get("alpha_sweep") and v.get("alpha") is not None
    )
    if len(points) < 2:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    alphas = [a for a, _ in points]
    for metric, color in (("pass_rate", "tab:blue"), ("accuracy", "tab:orange")):
        ys = [100 * v[metric]["mean"] for _, v in points]
        lo = [100 * v[metric]["ci"][0] for _, v in points]
        hi = [100 * v[metric]["ci"][1] for _, v in points]
        ax.plot(alphas, ys, marker="o", color=color, label=metric.replace("_", " "))
        ax.fill_between(alphas, lo, hi, color=color, alpha=0.15)
        ax.axhline(100 * summary["base"][metric]["mean"], color=color, ls="--", lw=0.8)
    ax.set_xlabel("alpha (weight of the possibility in P2Value)")
    ax.set_ylabel("held-out %  (dashed: base)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
