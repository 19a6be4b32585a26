"""Beam search throughput with 1..N generator replicas behind the client-side spreading, in one run.

N generator services start as separate processes (``uvicorn services.generator.app:create_app``, real
HTTP), replica ``i`` on GPU ``i`` only (``CUDA_VISIBLE_DEVICES=i``, as ``btp stack up --generators N``
starts them). For r = 1..N the same requests go through ``generator_client`` over the first r URLs
(:mod:`services.common.spread`): ``--requests`` calls of ``--prompts`` prompts each, beam search with k
beams and ``--new`` new tokens at most, ``--clients`` calls in flight at once (the driver sends one call
at a time; more clients model several drivers or an async caller). Reported per r: beam tokens/s =
generated tokens of all k candidates / wall time (median of ``--reps`` repetitions, with the spread),
and the scaling ratio tokens/s(r) / tokens/s(1); r = 1 is the baseline, measured in the same run.

    python bench/generator_replicas.py --replicas 8                       # GPU: SmolLM2-135M-Instruct
    python bench/generator_replicas.py --replicas 8 --model /path/Qwen2-0.5B-folder
    python bench/generator_replicas.py --preset cpu --replicas 2          # CPU smoke: tiny random model

On CPU the replicas share the machine's cores (one torch thread each), so the ratio says how much the
spreading adds or costs, not what GPUs would give.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.client import GeneratorClient  # noqa: E402
from services.common.schemas.generator import GenerateRequest  # noqa: E402
from services.common.spread import generator_client  # noqa: E402
from services.pipeline.cli.stack import free_port  # noqa: E402

PROMPT = '''def {name}(xs: list[int]) -> int:
    """Return the {what} of the numbers in xs."""
'''
WHATS = ["sum", "product", "largest", "smallest", "count of even", "mean", "median", "range"]


def tiny_model(folder: Path) -> Path:
    """A tiny random Llama with a small code tokenizer (the trainer tests' builder), for the CPU smoke."""
    from tests.trainer.helpers import build_tiny_llama

    return build_tiny_llama(folder)


def start_replicas(n: int, model: str, device: str, folder: Path) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """N generator processes, replica i on GPU i (CPU: one torch thread each); their URLs once healthy."""
    procs, urls = [], []
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    for i in range(n):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
        env.update(PYTHONPATH=str(ROOT), BTP_GENERATOR_MODEL=model, BTP_DATA_DIR=str(folder / f"data-{i}"),
                   BTP_MODEL_ROOTS=str(Path(model).parent) if Path(model).exists() else "",
                   BTP_GENERATOR_DEVICE=device, OMP_NUM_THREADS="1")  # fmt: skip
        if device == "cpu":
            env["BTP_GENERATOR_TORCH_THREADS"] = "1"
        else:
            env["CUDA_VISIBLE_DEVICES"] = visible[i] if visible else str(i)
        log = (folder / f"replica-{i}.log").open("wb")
        cmd = [sys.executable, "-m", "uvicorn", "services.generator.app:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    for i, url in enumerate(urls):
        with GeneratorClient(url) as c:
            try:
                c.wait_until_healthy(timeout=600)
            except Exception as exc:
                stop(procs)
                tail = (folder / f"replica-{i}.log").read_text()[-3000:]
                raise SystemExit(f"replica {i} did not start: {exc}\n{tail}") from exc
    return procs, urls


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def requests(args: argparse.Namespace) -> list[GenerateRequest]:
    out = []
    for r in range(args.requests):
        prompts = [PROMPT.format(name=f"f{r}_{i}", what=WHATS[(r + i) % len(WHATS)]) for i in range(args.prompts)]
        out.append(GenerateRequest(prompts=prompts, mode="beam", num_beams=args.k, max_new_tokens=args.new,
                                   prompt_format="raw"))  # fmt: skip
    return out


def measure(client: GeneratorClient, reqs: list[GenerateRequest], clients: int) -> tuple[float, int]:
    """Wall seconds and generated tokens (all candidates) of ``reqs``, ``clients`` calls in flight."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = list(pool.map(client.generate, reqs))
    wall = time.perf_counter() - t0
    tokens = sum(c.token_count for a in answers for res in a.results for c in res.candidates)
    return wall, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["gpu", "cpu"], default=None)
    parser.add_argument("--replicas", type=int, default=2, help="N: measure 1..N replicas")
    parser.add_argument("--model", default=None, help="model name or HF folder (cpu preset: a tiny random model)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per request")
    parser.add_argument("--requests", type=int, default=None, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--new", type=int, default=None, help="max new tokens")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.preset is None:
        import torch

        args.preset = "gpu" if torch.cuda.is_available() else "cpu"
    gpu = args.preset == "gpu"
    args.prompts = args.prompts or (64 if gpu else 4)
    args.requests = args.requests or (8 if gpu else 2)
    args.new = args.new or (256 if gpu else 16)
    if gpu:
        import torch

        if torch.cuda.device_count() < args.replicas:
            raise SystemExit(f"--replicas {args.replicas}: only {torch.cuda.device_count()} CUDA devices here")
    with tempfile.TemporaryDirectory(prefix="btp-bench-replicas-") as tmp:
        folder = Path(tmp)
        model = args.model or ("SmolLM2-135M-Instruct" if gpu else str(tiny_model(folder / "tiny")))
        print(f"{args.preset}: model={model} replicas 1..{args.replicas}, {args.requests} requests x "
              f"{args.prompts} prompts, k={args.k}, {args.new} new tokens, {args.clients} in flight", flush=True)
        procs, urls = start_replicas(args.replicas, model, "cuda" if gpu else "cpu", folder)
        results: dict[str, Any] = {}
        try:
            reqs = requests(args)
            for r in range(1, args.replicas + 1):
                with generator_client(",".join(urls[:r]), timeout=3600) as client:
                    measure(client, reqs[:1], 1)  # warm-up (CUDA graphs, first allocations)
                    runs = [measure(client, reqs, args.clients) for _ in range(args.reps)]
                tps = [tokens / wall for wall, tokens in runs]
                med = statistics.median(tps)
                base = results["1"]["median_tokens_per_s"] if results else med
                results[str(r)] = {"median_tokens_per_s": med, "tokens_per_s": tps, "scaling": med / base,
                                   "efficiency": med / base / r, "median_wall_s": statistics.median(w for w, _ in runs),
                                   "tokens": runs[0][1]}  # fmt: skip
                print(f"{r} replica(s)  {med:>10.1f} beam tok/s  (reps {min(tps):.1f}-{max(tps):.1f})  "
                      f"scaling {med / base:.2f}x  efficiency {med / base / r:.0%}", flush=True)
        finally:
            stop(procs)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
