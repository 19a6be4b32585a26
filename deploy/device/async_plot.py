"""The async-vs-lockstep plot of docs/results.md from `deploy/device/async.sh summary`'s JSON:

    python deploy/device/async_plot.py docs/results/async/async-results-2026-12-02.json docs/results/async/curve.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

STYLES = {"lock": ("tab:blue", "lockstep"), "async": ("tab:orange", "async")}


def main(src: Path, out: Path) -> None:
    data = json.loads(src.read_text())
    fig, (by_programs, by_time) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run in sorted(data.items()):
        kind, seed = name.split("-")
        color, label = STYLES[kind]
        line = "-" if seed == "s0" else "--"
        pass_rates = [100 * c["pass_rate"] for c in run["curve"]]
        by_programs.plot([c["trained_programs"] for c in run["curve"]], pass_rates, line, marker="o", color=color,
                         label=f"{label} {seed}")  # fmt: skip
        if kind == "async":
            by_time.plot([c["wall_seconds"] for c in run["curve"]], pass_rates, line, marker="o", color=color,
                         label=f"{label} {seed} (evaluation included)")  # fmt: skip
        else:
            by_time.axhline(pass_rates[-1], color=color, ls=line, lw=0.8,
                            label=f"lockstep {seed} after 3 rounds ({run['seconds']} s process wall)")  # fmt: skip
    by_programs.set(xlabel="trained programs", ylabel="held-out pass rate (%)",
                    title="MBPP held-out, SmolLM2-135M, one H200")  # fmt: skip
    by_programs.legend(fontsize=8)
    by_time.set(xlabel="async run seconds", ylabel="held-out pass rate (%)", title="async: pass rate against wall time")
    by_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
