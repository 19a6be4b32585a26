"""Statistics and rendering of an experiment: bootstrap confidence intervals over seeds and tasks, tables, plots.

Every variant is evaluated on the same held-out tasks as the base model, so the comparison is paired:
the CI of a variant's *change* recomputes the mean difference (variant - base, task by task) on each
bootstrap draw, which removes the between-task variance that dominates small slices.

Two sources of uncertainty, two levels of resampling. A result is a seeds x tasks matrix (each training
seed evaluated on every held-out task: the two factors are crossed). ``ci`` / ``delta_ci`` come from the
**two-way (seed and task) bootstrap** (Owen's "pigeonhole" bootstrap for crossed designs): each draw
takes ``n_seeds`` seeds with replacement *and*, independently, ``n_tasks`` tasks with replacement and
averages the matrix over the drawn rows and columns; the 95% interval is the 2.5-97.5 percentiles of
``draws`` such means. It carries the training variance (what another seed would give) as well as the
task sampling variance, and is mildly conservative (the seed x task interaction counts in both levels).
With one seed it reduces to the task bootstrap, and cannot show training variance at all.
``ci_tasks`` / ``delta_ci_tasks`` keep the earlier task-only interval (scores averaged over seeds first),
the method of the first results, for comparison. The base model's greedy evaluation is deterministic
and appears once. :func:`compare` gives the same two-way interval for the difference between two
recipes (their seeds resampled separately, the tasks on one shared draw).
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


def _percentiles(means: list[float], level: float) -> tuple[float, float]:
    means.sort()
    draws = len(means)
    return (means[int((1 - level) / 2 * draws)], means[min(draws - 1, int((1 + level) / 2 * draws))])


def seed_task_ci(
    matrix: Sequence[Sequence[float]], *, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Two-way bootstrap CI of the grand mean of ``matrix`` (rows: training seeds, columns: tasks).

    Each draw resamples the rows and, independently, the columns with replacement (see the module
    docstring); one row is the task bootstrap.
    """
    return seed_task_ci_diff(matrix, None, draws=draws, level=level, seed=seed)


def seed_task_ci_diff(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]] | None,
    *,
    draws: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-way bootstrap CI of ``mean(a) - mean(b)``: the rows (seeds) of ``a`` and of ``b`` are resampled
    separately, the columns (the same tasks, in the same order) on one draw shared by both."""
    if not a or not a[0]:
        return (0.0, 0.0)
    n_tasks = len(a[0])
    if any(len(row) != n_tasks for row in [*a, *(b or [])]):
        raise ValueError("every row must hold the same tasks")
    rng = random.Random(seed)

    def column_sums(rows: Sequence[Sequence[float]]) -> list[float]:
        # a draw of rows as counts: sum_s w_s * row_s, per task; / len(rows) gives the mean over drawn seeds
        counts = [0] * len(rows)
        for _ in rows:
            counts[rng.randrange(len(rows))] += 1
        cols = [0.0] * n_tasks
        for w, row in zip(counts, rows, strict=True):
            if w:
                for j, x in enumerate(row):
                    cols[j] += w * x
        return [c / len(rows) for c in cols]

    means: list[float] = []
    for _ in range(draws):
        cols = column_sums(a)
        if b:
            cols = [x - y for x, y in zip(cols, column_sums(b), strict=True)]
        means.append(sum(cols[rng.randrange(n_tasks)] for _ in range(n_tasks)) / n_tasks)
    return _percentiles(means, level)


def score_matrix(evals: Sequence[dict[str, Any]], key: str, tasks: Sequence[str]) -> list[list[float]]:
    """Seeds x tasks matrix of ``key`` (``pass_rate`` or ``passed_all``) over ``tasks``."""
    return [[float(ev["per_task"][t][key]) for t in tasks] for ev in evals]


def common_tasks(*evals: Sequence[dict[str, Any]]) -> list[str]:
    """The tasks every evaluation holds, sorted."""
    sets = [set(ev["per_task"]) for group in evals for ev in group]
    return sorted(set.intersection(*sets)) if sets else []


def compare(
    evals_a: Sequence[dict[str, Any]],
    evals_b: Sequence[dict[str, Any]],
    *,
    draws: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Recipe A minus recipe B on the same held-out tasks: mean difference and two-way CI, per metric."""
    tasks = common_tasks(evals_a, evals_b)
    out: dict[str, Any] = {"seeds": [len(evals_a), len(evals_b)], "tasks": len(tasks)}
    for metric, key in (("pass_rate", "pass_rate"), ("accuracy", "passed_all")):
        a, b = score_matrix(evals_a, key, tasks), score_matrix(evals_b, key, tasks)
        diff = mean([mean(r) for r in a]) - mean([mean(r) for r in b])
        out[metric] = {"diff": diff, "ci": seed_task_ci_diff(a, b, draws=draws, seed=seed)}
    return out


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
    """Pass rate and accuracy per seed and over seeds, with two-way (seed and task) CIs, and the paired
    change against ``base`` with its CI (see the module docstring); the task-only CIs as ``*_tasks``."""
    result: dict[str, Any] = {"seeds": len(evals), "ci_method": "two-way bootstrap over seeds and tasks"}
    tasks = common_tasks(evals, [base])
    for metric, key in (("pass_rate", "pass_rate"), ("accuracy", "passed_all")):
        scores = per_task_scores(evals, key)
        base_scores = per_task_scores([base], key)
        values = [scores[t] for t in tasks]
        deltas = [scores[t] - base_scores[t] for t in tasks]
        matrix = score_matrix(evals, key, tasks)
        delta_matrix = [[x - base_scores[t] for x, t in zip(row, tasks, strict=True)] for row in matrix]
        per_seed = [mean(row) for row in matrix]
        result[metric] = {
            "mean": mean(values),
            "ci": seed_task_ci(matrix, draws=draws, seed=seed),
            "delta": mean(deltas),
            "delta_ci": seed_task_ci(delta_matrix, draws=draws, seed=seed + 1),
            "ci_tasks": bootstrap_ci(values, draws=draws, seed=seed),
            "delta_ci_tasks": bootstrap_ci(deltas, draws=draws, seed=seed + 1),
            "per_seed": per_seed,
            "per_seed_delta": [mean(row) for row in delta_matrix],
            "seed_sd": _sd(per_seed),
            "improved_tasks": sum(d > 0 for d in deltas),
            "worse_tasks": sum(d < 0 for d in deltas),
        }
    return result


def _sd(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (None below two values)."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def _fmt(m: dict[str, Any], pct: bool = True) -> str:
    lo, hi = m["ci"]
    return f"{100 * m['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f"{m['mean']:.3f}"


def _fmt_delta(m: dict[str, Any]) -> str:
    lo, hi = m["delta_ci"]
    return f"{100 * m['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _fmt_seeds(m: dict[str, Any]) -> str:
    return " / ".join(f"{100 * x:.1f}" for x in m.get("per_seed", []))


def markdown_table(summary: dict[str, Any]) -> str:
    """The headline table: one row per variant, pass rate and accuracy (%) per seed and their mean, with
    two-way (seed and task) 95% CIs of the mean and of the paired change against the base."""
    lines = [
        "| variant | description | seeds | pass rate % per seed | pass rate % [95% CI] | Δ pass rate (paired) "
        "| accuracy % per seed | accuracy % [95% CI] | Δ accuracy (paired) | tasks better / worse (pass rate) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = summary["base"]
    lines.append(
        f"| base | {summary.get('base_description', 'before fine-tuning')} | - | - | {_fmt(base['pass_rate'])} | "
        f"- | - | {_fmt(base['accuracy'])} | - | - |"
    )
    for name, v in summary["variants"].items():
        pr, acc = v["pass_rate"], v["accuracy"]
        lines.append(
            f"| {name} | {v.get('description', '')} | {v['seeds']} | {_fmt_seeds(pr)} | {_fmt(pr)} | "
            f"{_fmt_delta(pr)} | {_fmt_seeds(acc)} | {_fmt(acc)} | {_fmt_delta(acc)} | "
            f"{pr['improved_tasks']} / {pr['worse_tasks']} |"
        )
    table = "\n".join(lines) + "\n"
    table += (
        "\n95% CIs: two-way bootstrap resampling training seeds and held-out tasks "
        "(services/pipeline/experiments/stats.py); with one seed, tasks only.\n"
    )
    transfer = summary.get("base_transfer")
    if transfer:
        name = summary.get("config", {}).get("transfer", "transfer")
        rows = [f"| base | {_fmt(transfer['pass_rate'])} | - | {_fmt(transfer['accuracy'])} | - |"]
        rows += [
            f"| {n} | {_fmt(t['pass_rate'])} | {_fmt_delta(t['pass_rate'])} | {_fmt(t['accuracy'])} | "
            f"{_fmt_delta(t['accuracy'])} |"
            for n, v in summary["variants"].items() if (t := v.get("transfer"))
        ]  # fmt: skip
        table += (f"\nTransfer ({name}, never trained on; after the last round), same intervals:\n\n"
                  "| variant | pass rate % [95% CI] | Δ pass rate (paired) | accuracy % [95% CI] | Δ accuracy |\n"
                  "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")  # fmt: skip
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
