"""The buffer's sampling index alone (no HTTP, no database): the cost of the first n=256 draw after a small
write at 1M experiences, incremental (this checkout's sum tree / rank list) vs a full O(N) rebuild of the
population and its distribution (what every request after a write paid for ``proportional`` before, and
what a cold process or a ``beam_softmax`` request pays), measured in the same run.

    .venv/bin/python bench/buffer_index.py [--n 1000000] [--reps 30] [--rows 10]

Each rep appends ``--rows`` new rows (ids above every stored one, as the buffer's writers produce) and
changes ``--patched`` stored pass rates (a PATCH copies the pass-rate column: snapshots are immutable), builds the next snapshot the way the index does (``apply_delta``, carried
per-row caches), then times ``prepared() + draw(256)`` on it: p50 / p90 of each and the ratio. bench/buffer.py
measures the same over HTTP against PostgreSQL, including fetching the drawn programs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.buffer.index import (
    ROW_DTYPE,
    PriorityIndex,
    Snapshot,
    TaskMap,
    _carry_caches,
    apply_delta,
    columns_from_rows,
)


def rows(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    out = np.zeros(ids.size, dtype=ROW_DTYPE)
    out["id"] = ids
    out["task_seq"] = rng.integers(0, 1000, ids.size)
    out["logprob"] = -rng.uniform(1, 60, ids.size)
    out["token_count"] = rng.integers(20, 300, ids.size)
    out["pass_rate"] = np.where(rng.random(ids.size) < 0.9, rng.choice([0.0, 0.25, 0.5, 1.0], ids.size), np.nan)
    return out


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rows", type=int, default=10, help="rows appended per write")
    ap.add_argument("--patched", type=int, default=0, help="stored rows whose pass rate each write changes")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tasks = TaskMap(np.zeros(1000, np.int32), np.zeros(1000, np.int32), {"bench": 0}, {"train": 0}, 1)
    base = rows(rng, np.arange(1, args.n + 1, dtype=np.int64))
    print("| scheme | rows | writes | full rebuild p50 ms | p90 | incremental p50 ms | p90 | speed-up (p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scheme in ("rank", "proportional"):
        params = dict(scheme=scheme, possibility="token_mean", alpha=0.5, exponent=1.0, dataset=("bench",),
                      split="train", source=None, include_unjudged=False)
        index = PriorityIndex()
        snap = Snapshot(version=1, tasks=tasks, n=base.size, cols=columns_from_rows(base), serial=1)
        index._history[1] = (None, None)
        index.prepared(snap, **params).draw(256, np.random.default_rng(0))  # the first build (cold)
        next_id = args.n + 1
        inc: list[float] = []
        full: list[float] = []
        for k in range(args.reps):
            new_ids = np.arange(next_id, next_id + args.rows, dtype=np.int64)
            next_id += args.rows
            # a PATCH changes a stored row's pass rate only
            patched = snap.rows[np.sort(rng.choice(snap.n, args.patched, replace=False))]
            patched["pass_rate"] = rng.choice([0.0, 0.25, 0.5, 1.0], patched.size)
            delta = np.sort(np.concatenate([patched, rows(rng, new_ids)]), order="id")
            cols, n, changed = apply_delta(snap, delta)
            child = Snapshot(version=snap.version + 1, tasks=tasks, n=n, cols=cols, serial=snap.serial + 1,
                             parent_serial=snap.serial, changed=changed)
            _carry_caches(snap, child)
            index._history[child.serial] = (snap.serial, changed)
            snap = child
            t = time.perf_counter()
            index.prepared(snap, **params).draw(256, np.random.default_rng(k))
            inc.append(time.perf_counter() - t)
            t = time.perf_counter()
            PriorityIndex(cache_entries=0).prepared(snap, **params).draw(256, np.random.default_rng(k))
            full.append(time.perf_counter() - t)
        print(f"| {scheme} | {snap.n:,} | {args.reps} x {args.rows} new + {args.patched} patched | "
              f"{1e3 * pct(full, 50):.1f} | {1e3 * pct(full, 90):.1f} | {1e3 * pct(inc, 50):.2f} | "
              f"{1e3 * pct(inc, 90):.2f} | {statistics.median(full) / statistics.median(inc):.0f}x |", flush=True)
        assert index.incremental_prepares == args.reps


if __name__ == "__main__":
    main()
