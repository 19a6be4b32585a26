"""`btp report RUN` and `btp sweep`'s figure: an HTML page with matplotlib PNG plots.

Everything is read from the run folder (config.json, metrics/round_*.json), so a report needs no
running service: per-round pass rate and accuracy (overall and per difficulty), the buffer's P2Value
and pass-rate histograms, and what PPER sampled versus what the buffer stored.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import Any

from .folder import RunFolder


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax: Any, hist: dict[str, Any], label: str, alpha: float = 0.6, density: bool = False) -> None:
    edges, counts = hist["edges"], hist["counts"]
    total = sum(counts) or 1
    heights = [c / total for c in counts] if density else counts
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], heights, width=widths, align="edge", alpha=alpha, label=label, edgecolor="black")


def plot_rounds(metrics: list[dict[str, Any]], out: Path) -> Path | None:
    """Pass rate and accuracy per round (overall, and per difficulty where there is one)."""
    rows = [m for m in metrics if "eval" in m]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [m["round"] for m in rows]
    ax.plot(rounds, [m["eval"]["pass_rate"] for m in rows], marker="o", label="pass rate")
    ax.plot(rounds, [m["eval"]["accuracy"] for m in rows], marker="s", label="accuracy")
    difficulties = sorted({d for m in rows for d in m["eval"].get("by_difficulty", {})})
    for d in difficulties:
        ys = [m["eval"].get("by_difficulty", {}).get(d, {}).get("pass_rate") for m in rows]
        ax.plot(rounds, ys, linestyle="--", marker=".", label=f"pass rate ({d})")
    ax.set_xlabel("round (0 = before training)")
    ax.set_ylabel("held-out score")
    ax.set_xticks(rounds)
    ax.set_ylim(0, max(0.05, *(m["eval"]["pass_rate"] for m in rows)) * 1.15)
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / "rounds.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_buffer(metrics: list[dict[str, Any]], out: Path) -> list[Path]:
    """The buffer's histograms and sampled-versus-stored distributions of the last trained round."""
    rows = [m for m in metrics if "buffer" in m or "replay" in m]
    if not rows:
        return []
    last = rows[-1]
    plt = _plt()
    paths: list[Path] = []
    datasets = (last.get("buffer") or {}).get("datasets", {})
    if datasets:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name, ds in datasets.items():
            _bars(axes[0], ds["p2value_histogram"], name)
            _bars(axes[1], ds["pass_rate_histogram"], name)
        axes[0].set_title(f"P2Value of stored programs (alpha={last['buffer'].get('alpha')})")
        axes[1].set_title("pass rate of stored programs")
        for ax in axes:
            ax.set_ylabel("programs")
            ax.legend()
        fig.tight_layout()
        paths.append(out / "buffer.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    replay = last.get("replay")
    if replay:
        fig, ax = plt.subplots(figsize=(6, 4))
        _bars(ax, replay["stored"]["pass_rate"], "stored", density=True)
        _bars(ax, replay["sampled"]["pass_rate"], "sampled by PPER", alpha=0.5, density=True)
        ax.set_title(f"pass rate: sampled vs stored (round {last['round']})")
        ax.set_xlabel("pass rate")
        ax.set_ylabel("fraction")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "sampled_vs_stored.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def plot_loss(metrics: list[dict[str, Any]], out: Path) -> Path | None:
    """Training loss per step, one line per round."""
    rows = [m for m in metrics if (m.get("train") or {}).get("loss_history")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in rows:
        hist = m["train"]["loss_history"]
        ax.plot([p["step"] for p in hist], [p["loss"] for p in hist], marker=".", label=f"round {m['round']}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (program tokens)")
    ax.legend()
    fig.tight_layout()
    path = out / "loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def table_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated round: round, pass rate, accuracy, per difficulty, seconds."""
    rows = []
    for m in metrics:
        if "eval" not in m:
            continue
        e = m["eval"]
        seconds = sum(float(m.get(f"{k}_seconds", 0.0)) for k in ("sample", "judge", "train", "eval"))
        row = {"round": m["round"], "tasks": e["tasks"], "pass_rate": e["pass_rate"], "accuracy": e["accuracy"],
               "by_difficulty": e.get("by_difficulty", {}), "by_dataset": e.get("by_dataset", {}),
               "seconds": seconds}  # fmt: skip
        if "version" in m:  # an async run's evaluation: at which version, after how many trained programs, when
            row |= {"version": m["version"], "trained_programs": m["trained_programs"], "wall_seconds": m["wall_seconds"],
                    "seconds": float(m["wall_seconds"])}  # fmt: skip
        rows.append(row)
    return rows


def _img(path: Path | None) -> str:
    return f'<p><img src="{html.escape(path.name)}" alt="{html.escape(path.stem)}"></p>' if path else ""


def write_report(folder: RunFolder, out: Path | None = None) -> Path:
    """Write ``report.html`` and its PNGs into the run folder (or ``out``); returns the HTML path."""
    out = out or folder.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    cfg = folder.config()
    metrics = folder.metrics()
    images = [plot_rounds(metrics, out), plot_loss(metrics, out), *plot_buffer(metrics, out)]
    rows = table_rows(metrics)
    body = [f"<h1>BTP run {html.escape(folder.name)}</h1>",
            "<table><tr><th>round</th><th>tasks</th><th>pass rate</th><th>accuracy</th><th>per difficulty</th>"
            "<th>seconds</th></tr>"]  # fmt: skip
    for r in rows:
        per = ", ".join(f"{k}: {v['pass_rate']:.3f}/{v['accuracy']:.3f}" for k, v in r["by_difficulty"].items())
        body.append(f"<tr><td>{r['round']}</td><td>{r['tasks']}</td><td>{r['pass_rate']:.4f}</td>"
                    f"<td>{r['accuracy']:.4f}</td><td>{html.escape(per) or '-'}</td><td>{r['seconds']:.0f}</td></tr>")  # fmt: skip
    body.append("</table>")
    body += [_img(p) for p in images if p]
    body.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.model_dump(mode="json"), indent=2)) + "</pre>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>BTP run</title><style>"
            "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #999;padding:4px 8px}"
            "table{border-collapse:collapse}</style></head><body>" + "\n".join(body) + "</body></html>")  # fmt: skip
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_sweep_report(results: list[dict[str, Any]], out: Path) -> Path:
    """The alpha sweep (the paper's Figure 1): final held-out pass rate and accuracy against alpha."""
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    results = sorted(results, key=lambda r: r["alpha"])
    fig, ax = plt.subplots(figsize=(6, 4))
    alphas = [r["alpha"] for r in results]
    ax.plot(alphas, [r["pass_rate"] for r in results], marker="o", label="pass rate")
    ax.plot(alphas, [r["accuracy"] for r in results], marker="s", label="accuracy")
    ax.plot(alphas, [r["baseline_pass_rate"] for r in results], linestyle=":", color="gray", label="before training")
    ax.set_xlabel("alpha (weight of the possibility in P2Value)")
    ax.set_ylabel("held-out score after the last round")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "sweep.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    rows = "".join(f"<tr><td>{r['alpha']}</td><td>{html.escape(r['run'])}</td><td>{r['baseline_pass_rate']:.4f}</td>"
                   f"<td>{r['pass_rate']:.4f}</td><td>{r['accuracy']:.4f}</td></tr>" for r in results)  # fmt: skip
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>BTP alpha sweep</title></head><body>"
            "<h1>alpha sweep</h1><table border=1><tr><th>alpha</th><th>run</th><th>pass rate before</th>"
            f"<th>pass rate after</th><th>accuracy after</th></tr>{rows}</table>{_img(png)}</body></html>")  # fmt: skip
    path = out / "sweep.html"
    path.write_text(page, encoding="utf-8")
    (out / "sweep.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return path
