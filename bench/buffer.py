"""Buffer benchmark: bulk inserts over HTTP into PostgreSQL, and sample latency at 10k / 100k / 1M
experiences against a naive baseline measured in the same run.

    .venv/bin/python bench/buffer.py [--sizes 10000,100000,1000000] [--reps 30]

What it does
- creates a uniquely named PostgreSQL database (dropped at the end) and starts the buffer as a real
  uvicorn process on it;
- insert: POST /v1/experiences in batches of 1,000 (one client, sequential) vs the same items one per
  request (the baseline), experiences/s;
- sample: fills the table with COPY up to each size, then times POST /v1/sample (n = 64 and 256,
  schemes rank and proportional) over HTTP: the first request after the fill ("cold": index load or
  incremental refresh plus preparation) and then ``reps`` requests with fresh seeds (p50 / p99);
  also the first request after a small write ("after write"). The naive baseline, run in this process
  without HTTP (which favours it), loads every priority from PostgreSQL, scores and samples with numpy
  and fetches the n rows, on every request.
- after a write, against a baseline commit: a second buffer server runs the code of ``--baseline`` (a git
  ref, exported with ``git archive``; default ``main``; ``none`` skips it) on the same database. For each
  scheme, ``--after-write-reps`` times: 10 rows are written, then both servers (in alternating order)
  answer their first ``POST /v1/sample`` (n = 256) after that write; p50 / p90 of each and the ratio.

    .venv/bin/python bench/buffer.py --sizes 1000000 --reps 10 --naive-reps 1 --batches 2 --singles 20
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.buffer import priority as sampling  # noqa: E402
from services.buffer.tables import group_key, key64  # noqa: E402

PG = os.environ.get("BTP_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres")
N_TASKS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_server(db: str, tmp: Path, tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "BTP_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", "BTP_DATA_DIR": str(tmp)}
    env.pop("BTP_API_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.buffer.app:create_app", "--factory", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=tree, env={**env, "PYTHONPATH": str(tree)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("buffer did not start")


def export_tree(ref: str) -> Path:
    """The tree of git ref ``ref`` in a temporary folder (the baseline server runs from it)."""
    import tarfile
    import tempfile

    tree = Path(tempfile.mkdtemp(prefix="btp-bench-baseline-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def after_write(urls: dict[str, str], scheme: str, reps: int, tag: int) -> dict[str, list[float]]:
    """``reps`` times: write 10 rows, then time each server's first n=256 sample after it (order alternates)."""
    times: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    clients = {name: httpx.Client(base_url=url, timeout=600) for name, url in urls.items()}
    try:
        body = {"n": 256, "scheme": scheme, "alpha": 0.5, "possibility": "token_mean"}
        for name in names:  # each server has built this scheme's distribution before the first write
            clients[name].post("/v1/sample", json={**body, "seed": 0}).raise_for_status()
        writer = clients[names[-1]]
        for k in range(reps):
            rng = np.random.default_rng(k)
            write = [item(200_000_000 + tag * 1_000_000 + 100 * k + j, rng) for j in range(10)]
            writer.post("/v1/experiences", json={"items": write}).raise_for_status()
            for name in (names if k % 2 == 0 else names[::-1]):
                t = time.perf_counter()
                clients[name].post("/v1/sample", json={**body, "seed": k}).raise_for_status()
                times[name].append(time.perf_counter() - t)
    finally:
        for c in clients.values():
            c.close()
    return times


def task_body(i: int) -> dict[str, Any]:
    return {
        "id": f"Bench/{i}", "dataset": "bench", "split": "train",
        "prompt": f"def solve_{i}(xs):\n    \"\"\"Return the answer for task {i}.\"\"\"\n" + "    # context\n" * 10,
        "tests": {"kind": "check", "entry_point": f"solve_{i}", "code": "def check(candidate):\n    assert candidate([1]) == 1\n"},
    }


def program(i: int) -> str:
    return f"    total = 0\n    for x in xs:\n        total += x * {i}\n    return total  # variant {i}\n" + "    pass\n" * 20


def item(i: int, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "task_id": f"Bench/{i % N_TASKS}", "program": program(i), "logprob": float(-rng.uniform(1, 60)),
        "token_count": int(rng.integers(20, 300)), "source": "bench@0", "round": 0, "generation": f"g{i // 3}",
        "pass_rate": float(rng.choice([0.0, 0.25, 0.5, 1.0])),
    }


def bench_insert(url: str, batches: int, singles: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=600) as http:
        http.post("/v1/tasks", json={"tasks": [task_body(i) for i in range(N_TASKS)]}).raise_for_status()
        base = 10_000_000
        rates = []
        t_all = time.perf_counter()
        for b in range(batches):
            body = {"items": [item(base + b * 1000 + j, rng) for j in range(1000)]}
            t = time.perf_counter()
            r = http.post("/v1/experiences", json=body)
            r.raise_for_status()
            rates.append(1000 / (time.perf_counter() - t))
        out["bulk_total"] = batches * 1000 / (time.perf_counter() - t_all)
        out["bulk_p50"] = statistics.median(rates)
        t = time.perf_counter()
        for k in range(singles):
            http.post("/v1/experiences", json={"items": [item(base + 5_000_000 + k, rng)]}).raise_for_status()
        out["single"] = singles / (time.perf_counter() - t)
        # a retried batch: all rows exist, nothing created
        retry_rng = np.random.default_rng(0)
        retry = {"items": [item(base + j, retry_rng) for j in range(1000)]}  # exactly the first batch again
        t = time.perf_counter()
        r = http.post("/v1/experiences", json=retry)
        r.raise_for_status()
        assert r.json()["created"] == 0
        out["retry"] = 1000 / (time.perf_counter() - t)
    return out


def fill(conn: psycopg.Connection[Any], start: int, stop: int) -> None:
    """COPY experiences [start, stop) straight into the table, stamped with one new version."""
    rng = np.random.default_rng(start)
    seqs = dict(conn.execute("SELECT id, seq FROM tasks").fetchall())
    with conn.transaction():
        version = conn.execute("UPDATE buffer_state SET version = version + 1 WHERE id = 1 RETURNING version").fetchone()[0]  # type: ignore[index]
        cols = ("task_id, task_seq, program, program_hash, source, source_key, group_key, logprob, token_count, "
                "probability, pass_rate, round, generation, created_at, row_version")
        src_key = key64("bench@0")
        with conn.cursor().copy(f"COPY experiences ({cols}) FROM STDIN") as copy:
            for lo in range(start, stop, 50_000):
                hi = min(stop, lo + 50_000)
                lps = -rng.uniform(1, 60, hi - lo)
                tcs = rng.integers(20, 300, hi - lo)
                prs = rng.choice([0.0, 0.25, 0.5, 1.0], hi - lo)
                judged = rng.random(hi - lo) < 0.9
                buf = io.StringIO()
                for k, i in enumerate(range(lo, hi)):
                    tid = f"Bench/{i % N_TASKS}"
                    prog = f"return {i}  # filled"
                    digest = hashlib.sha256(prog.encode()).hexdigest()
                    gen = f"f{i // 3}"
                    pr = repr(float(prs[k])) if judged[k] else "\\N"
                    lp = float(lps[k])
                    buf.write(
                        f"{tid}\t{seqs[tid]}\t{prog}\t\\\\x{digest}\tbench@0\t{src_key}\t{group_key(tid, 'bench@0', 0, gen)}\t"
                        f"{lp!r}\t{int(tcs[k])}\t{float(np.exp(lp))!r}\t{pr}\t0\t{gen}\t2026-01-01 00:00:00+00\t{version}\n"
                    )
                copy.write(buf.getvalue())


def time_http_sample(http: httpx.Client, body: dict[str, Any], reps: int) -> tuple[float, list[float]]:
    t = time.perf_counter()
    http.post("/v1/sample", json={**body, "seed": 0}).raise_for_status()
    cold = time.perf_counter() - t
    times = []
    for s in range(1, reps + 1):
        t = time.perf_counter()
        r = http.post("/v1/sample", json={**body, "seed": s})
        r.raise_for_status()
        times.append(time.perf_counter() - t)
        assert len(r.json()["items"]) == body["n"]
    return cold, times


def naive_sample(conn: psycopg.Connection[Any], scheme: str, n: int, seed: int) -> list[Any]:
    """The baseline: all priorities from the database, scored and sampled with numpy, every request."""
    rows = conn.execute(
        "SELECT id, logprob, token_count, COALESCE(pass_rate, -1) FROM experiences WHERE pass_rate IS NOT NULL"
    ).fetchall()
    arr = np.asarray(rows, dtype=np.float64)
    ids = arr[:, 0].astype(np.int64)
    poss = sampling.possibility("token_mean", arr[:, 1], arr[:, 2].astype(np.int64))
    p2 = sampling.p2value(0.5, poss, arr[:, 3])
    pos, _ = sampling.sample(scheme, p2, ids, n, seed=seed)
    chosen = sorted({int(i) for i in ids[pos]})
    return conn.execute(
        "SELECT e.id, e.task_id, e.program, t.prompt FROM experiences e JOIN tasks t ON t.id = e.task_id WHERE e.id = ANY(%s)",
        (chosen,),
    ).fetchall()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--naive-reps", type=int, default=5)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--insert-only", action="store_true", help="run only the insert benchmark")
    ap.add_argument("--baseline", default="main", help="git ref of the after-write baseline server ('none': skip)")
    ap.add_argument("--after-write-reps", type=int, default=20)
    args = ap.parse_args()
    sizes = [] if args.insert_only else [int(s) for s in args.sizes.split(",")]
    db = f"btp_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    tmp = Path(f"/tmp/{db}")
    tmp.mkdir()
    # the insert benchmark runs on its own database and server, the sampling one on a clean one
    db_ins = db + "_ins"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_ins)))
    proc, url = start_server(db_ins, tmp)
    try:
        ins = bench_insert(url, args.batches, args.singles)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_ins)))
    proc, url = start_server(db, tmp)
    base_proc: subprocess.Popen[bytes] | None = None
    base_tree: Path | None = None
    after_rows: list[tuple[int, str, dict[str, list[float]]]] = []
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            http.post("/v1/tasks", json={"tasks": [task_body(i) for i in range(N_TASKS)]}).raise_for_status()
        base_url = None
        if args.baseline != "none" and sizes:
            base_tree = export_tree(args.baseline)
            base_proc, base_url = start_server(db, tmp, base_tree)
        print("\n## Bulk insert over HTTP into PostgreSQL (one client, real uvicorn)")
        print("| method | experiences/s | vs baseline |")
        print("|---|---:|---:|")
        print(f"| baseline: 1 item per request ({args.singles} requests) | {ins['single']:,.0f} | 1.0x |")
        print(f"| bulk, 1,000 per request, median batch ({args.batches} batches) | {ins['bulk_p50']:,.0f} | {ins['bulk_p50'] / ins['single']:.1f}x |")
        print(f"| bulk, 1,000 per request, overall | {ins['bulk_total']:,.0f} | {ins['bulk_total'] / ins['single']:.1f}x |")
        print(f"| retried batch (all 1,000 already stored) | {ins['retry']:,.0f} | {ins['retry'] / ins['single']:.1f}x |")
        print(flush=True)
        rows_table = []
        with psycopg.connect(f"{PG} dbname={db}", autocommit=True) as conn, httpx.Client(base_url=url, timeout=600) as http:
            have = int(conn.execute("SELECT count(*) FROM experiences").fetchone()[0])  # type: ignore[index]
            filled = 0
            for size in sizes:
                t = time.perf_counter()
                fill(conn, filled, filled + size - have)
                filled += size - have
                have = size
                conn.execute("VACUUM ANALYZE experiences")
                fill_s = time.perf_counter() - t
                for scheme in ("rank", "proportional"):
                    for n in (64, 256):
                        body = {"n": n, "scheme": scheme, "alpha": 0.5, "possibility": "token_mean"}
                        cold, times = time_http_sample(http, body, args.reps)
                        naive = []
                        for s in range(args.naive_reps if size >= 1_000_000 else max(args.naive_reps, 10)):
                            t = time.perf_counter()
                            naive_sample(conn, scheme, n, s)
                            naive.append(time.perf_counter() - t)
                        rows_table.append((size, scheme, n, cold, times, naive))
                        print(f"  size={size:,} {scheme} n={n}: p50 {1e3 * pct(times, 50):.1f} ms, naive p50 {1e3 * pct(naive, 50):.0f} ms (fill {fill_s:.0f}s)", flush=True)
                # first request after a small write (10 rows): refresh + incremental re-preparation
                for scheme in ("rank", "proportional"):
                    after = []
                    for k in range(5):
                        write = [item(90_000_000 + 1000 * k + j + (size % 997) * 10_000 + (scheme == "rank") * 500, np.random.default_rng(k)) for j in range(10)]
                        http.post("/v1/experiences", json={"items": write}).raise_for_status()
                        have += 10
                        t = time.perf_counter()
                        http.post("/v1/sample", json={"n": 256, "scheme": scheme, "alpha": 0.5, "possibility": "token_mean", "seed": k}).raise_for_status()
                        after.append(time.perf_counter() - t)
                    rows_table.append((size, f"{scheme}, first request after a 10-row write (median of 5)", 256, statistics.median(after), [], []))
                if base_url is not None:
                    for scheme in ("rank", "proportional"):
                        urls = {f"baseline ({args.baseline})": base_url, "new": url}
                        got = after_write(urls, scheme, args.after_write_reps, tag=size % 997 + (scheme == "rank") * 500)
                        have += 10 * args.after_write_reps
                        after_rows.append((size, scheme, got))
                        print(f"  size={size:,} {scheme} after write: " + ", ".join(
                            f"{k} p50 {1e3 * pct(v, 50):.1f} ms" for k, v in got.items()), flush=True)
        if not sizes:
            return
        # a cold process: restart the server and time its first request (full index load)
        proc.terminate()
        proc.wait(timeout=30)
        proc, url = start_server(db, tmp)
        with httpx.Client(base_url=url, timeout=600) as http:
            t = time.perf_counter()
            http.post("/v1/sample", json={"n": 256, "scheme": "rank", "seed": 1}).raise_for_status()
            rows_table.append((sizes[-1], "rank, first request of a fresh process (full load)", 256, time.perf_counter() - t, [], []))
        print("\n## POST /v1/sample latency (HTTP, real uvicorn, PostgreSQL) vs naive baseline (in-process, no HTTP)")
        print("| experiences | scheme | n | index p50 ms | index p99 ms | first request ms | naive p50 ms | naive p99 ms | speed-up (p50) |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for size, scheme, n, cold, times, naive in rows_table:
            if naive:
                print(f"| {size:,} | {scheme} | {n} | {1e3 * pct(times, 50):.1f} | {1e3 * pct(times, 99):.1f} | {1e3 * cold:.0f} | "
                      f"{1e3 * pct(naive, 50):.0f} | {1e3 * pct(naive, 99):.0f} | {pct(naive, 50) / pct(times, 50):.0f}x |")
            else:
                print(f"| {size:,} | {scheme} | {n} | | | {1e3 * cold:.0f} | | | |")
        if after_rows:
            print("\n## First POST /v1/sample (n=256) after a 10-row write: this checkout vs the baseline server, "
                  "same database, same run (HTTP, PostgreSQL)")
            print("| experiences | scheme | writes | baseline p50 ms | baseline p90 ms | new p50 ms | new p90 ms | speed-up (p50) |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|")
            for size, scheme, got in after_rows:
                b, nw = list(got.values())
                print(f"| {size:,} | {scheme} | {len(nw)} | {1e3 * pct(b, 50):.1f} | {1e3 * pct(b, 90):.1f} | "
                      f"{1e3 * pct(nw, 50):.1f} | {1e3 * pct(nw, 90):.1f} | {pct(b, 50) / pct(nw, 50):.1f}x |")
            # the floor on this machine now: an empty request through the same HTTP stack
            with httpx.Client(base_url=url, timeout=60) as http:
                health = []
                for _ in range(30):
                    t = time.perf_counter()
                    http.get("/health").raise_for_status()
                    health.append(time.perf_counter() - t)
            print(f"\nGET /health (no database, no work) on the new server after the run: p50 "
                  f"{1e3 * pct(health, 50):.2f} ms, p90 {1e3 * pct(health, 90):.2f} ms; load average {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if base_proc is not None:
            base_proc.terminate()
            base_proc.wait(timeout=30)
        if base_tree is not None:
            shutil.rmtree(base_tree, ignore_errors=True)
        with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
