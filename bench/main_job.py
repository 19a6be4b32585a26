"""The main job (`btp run` with its defaults, embedded, empty data dir): wall time, CPU time, peak resident
memory and the held-out scores, for this checkout and a baseline commit, measured in the same run.

    .venv/bin/python bench/main_job.py                       # baseline = origin of this branch (main)
    .venv/bin/python bench/main_job.py --baseline 304f5c2 --reps 1
    .venv/bin/python bench/main_job.py --only new            # this checkout only

Each run is ``/usr/bin/time -v python -m services.pipeline.cli run --json`` (what ``btp run`` is) with
``BTP_DATA_DIR`` set to a new empty folder, so the one-time GGUF -> HF conversion is included, as on a
fresh machine. The baseline is the tree of ``--baseline`` exported with ``git archive`` into a temporary
folder and run with the same interpreter and packages (``python -m`` puts that folder first on the path).
Runs alternate (baseline, new, baseline, new, ...) so background load on a shared machine hits both.

Printed per run: wall seconds, user+system CPU seconds, peak resident memory of the driver process
(``time -v``'s "Maximum resident set size"; the judge's sandbox processes are separate and small), the
held-out pass rate and accuracy before and after the round, and a memory profile: the largest resident
memory seen (sampled every 0.1 s from /proc) during each phase of the run (the phase names come from
``<run>/progress.json``), "start" being everything before the first phase (imports, GGUF conversion,
model load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def current_phase(data_dir: Path) -> str:
    runs = sorted((data_dir / "runs").glob("*/progress.json")) if (data_dir / "runs").is_dir() else []
    if not runs:
        return "start"
    try:
        doc = json.loads(runs[-1].read_text())
    except (OSError, ValueError):
        return "?"
    phase = doc.get("phase") if isinstance(doc, dict) else None
    return str(phase or "start")


class Sampler(threading.Thread):
    """Peak VmRSS of the child of ``time`` (the driver), per phase."""

    def __init__(self, time_proc: subprocess.Popen[bytes], data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.time_proc, self.data_dir = time_proc, data_dir
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()

    def driver_pid(self) -> int | None:
        try:
            kids = Path(f"/proc/{self.time_proc.pid}/task/{self.time_proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def run(self) -> None:
        pid = None
        while not self.done.is_set():
            pid = pid or self.driver_pid()
            if pid is not None:
                kib = rss_kib(pid)
                phase = current_phase(self.data_dir)
                if kib > self.peaks.get(phase, 0):
                    self.peaks[phase] = kib
            time.sleep(0.1)


def parse_time(text: str) -> dict[str, float]:
    def grab(label: str) -> float:
        m = re.search(rf"{re.escape(label)}: (.+)", text)
        if not m:
            return float("nan")
        value = m.group(1).strip()
        if ":" in value:  # h:mm:ss or m:ss.ss
            parts = [float(p) for p in value.split(":")]
            secs = 0.0
            for p in parts:
                secs = secs * 60 + p
            return secs
        return float(value)

    return {
        "wall_s": grab("Elapsed (wall clock) time (h:mm:ss or m:ss)"),
        "cpu_s": grab("User time (seconds)") + grab("System time (seconds)"),
        "peak_rss_mib": grab("Maximum resident set size (kbytes)") / 1024,
    }


def one_run(tree: Path, label: str, extra: list[str]) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix=f"btp-mainjob-{label}-"))
    env = {**os.environ, "BTP_DATA_DIR": str(data), "PYTHONPATH": str(tree)}
    for name in ("BTP_GENERATOR_URL", "BTP_JUDGE_URL", "BTP_BUFFER_URL", "BTP_TRAINER_URL", "BTP_DATABASE_URL"):
        env.pop(name, None)
    timing = data / "time.txt"
    cmd = ["/usr/bin/time", "-v", "-o", str(timing), sys.executable, "-m", "services.pipeline.cli", "run", "--json", *extra]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc, data)
    sampler.start()
    out, err = proc.communicate()
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{label} run failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    row: dict[str, Any] = {"label": label, **parse_time(timing.read_text())}
    doc = json.loads(out.decode().strip().splitlines()[-1])
    for r in doc["rounds"]:
        key = "before" if str(r.get("round")) in ("0", "before") else f"after{r.get('round')}"
        row[f"{key}_pass_rate"] = r.get("pass_rate")
        row[f"{key}_accuracy"] = r.get("accuracy")
    row["rounds"] = doc["rounds"]
    row["phase_peak_mib"] = {k: round(v / 1024) for k, v in sampler.peaks.items()}
    shutil.rmtree(data, ignore_errors=True)
    return row


def export_tree(ref: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix="btp-mainjob-baseline-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="main", help="git ref of the baseline (default main)")
    p.add_argument("--reps", type=int, default=1, help="runs of each (alternating)")
    p.add_argument("--only", choices=["new", "baseline"], default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("extra", nargs="*", help="extra `btp run` options after --")
    args = p.parse_args()
    trees: list[tuple[str, Path]] = []
    base_tree = None
    if args.only != "new":
        base_tree = export_tree(args.baseline)
        trees.append((f"baseline ({args.baseline})", base_tree))
    if args.only != "baseline":
        trees.append(("new (this checkout)", ROOT))
    rows: list[dict[str, Any]] = []
    try:
        for rep in range(args.reps):
            for label, tree in trees:
                print(f"# rep {rep + 1}: {label} ...", file=sys.stderr, flush=True)
                row = one_run(tree, label.split()[0], args.extra)
                row["label"] = label
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    finally:
        if base_tree is not None:
            shutil.rmtree(base_tree, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| run | wall s | CPU s | peak RSS MiB | pass rate before -> after | accuracy before -> after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_mib']:,.0f} | "
              f"{r.get('before_pass_rate')} -> {r.get('after1_pass_rate')} | "
              f"{r.get('before_accuracy')} -> {r.get('after1_accuracy')} |")
    labels = [t[0] for t in trees]
    if len(labels) == 2:
        med = {lab: {k: statistics.median(r[k] for r in rows if r["label"] == lab) for k in ("wall_s", "cpu_s", "peak_rss_mib")}
               for lab in labels}
        b, n = med[labels[0]], med[labels[1]]
        print(f"\nmedians: wall {b['wall_s']:.0f} -> {n['wall_s']:.0f} s ({b['wall_s'] / n['wall_s']:.2f}x), "
              f"CPU {b['cpu_s']:.0f} -> {n['cpu_s']:.0f} s ({b['cpu_s'] / n['cpu_s']:.2f}x), "
              f"peak RSS {b['peak_rss_mib']:,.0f} -> {n['peak_rss_mib']:,.0f} MiB ({b['peak_rss_mib'] / n['peak_rss_mib']:.2f}x)")
    print("\nmemory profile: peak resident MiB per phase")
    phases: list[str] = []
    for r in rows:
        phases += [ph for ph in r["phase_peak_mib"] if ph not in phases]
    print("| phase | " + " | ".join(r["label"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for ph in phases:
        print(f"| {ph} | " + " | ".join(str(r["phase_peak_mib"].get(ph, "")) for r in rows) + " |")


if __name__ == "__main__":
    main()
