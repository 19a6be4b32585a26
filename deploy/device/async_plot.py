"""The async-vs-lockstep plot of docs/results.md from `deploy/device/async.sh summary` output:
    python deploy/device/async_plot.py docs/results/async/async-results-2026-12-02.json docs/results/async/curve.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = json.load(open(sys.argv[1]))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
styles = {"lock": ("tab:blue", "lockstep"), "async": ("tab:orange", "async")}
for name, r in sorted(d.items()):
    kind, seed = name.split("-")
    color, label = styles[kind]
    ls = "-" if seed == "s0" else "--"
    xs = [c["trained_programs"] for c in r["curve"]]
    ys = [100 * c["pass_rate"] for c in r["curve"]]
    axes[0].plot(xs, ys, ls, marker="o", color=color, label=f"{label} {seed}")
    if kind == "async":
        ws = [c["wall_seconds"] for c in r["curve"]]
        axes[1].plot(ws, ys, ls, marker="o", color=color, label=f"{label} {seed} (evaluation included)")
axes[0].set_xlabel("trained programs"); axes[0].set_ylabel("held-out pass rate (%)"); axes[0].legend(fontsize=8)
axes[0].set_title("MBPP held-out, SmolLM2-135M, one H200")
for name, r in sorted(d.items()):
    if name.startswith("lock"):
        axes[1].axhline(100 * r["curve"][-1]["pass_rate"], color="tab:blue", ls="-" if name.endswith("s0") else "--", lw=0.8,
                        label=f"lockstep {name[-2:]} after 3 rounds ({r['seconds']} s process wall)")
axes[1].set_xlabel("async run seconds"); axes[1].set_ylabel("held-out pass rate (%)"); axes[1].legend(fontsize=7)
axes[1].set_title("async: pass rate against wall time")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=110)
