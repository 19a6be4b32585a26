"""Training throughput: the BTP trainer's step vs a plain ``transformers.Trainer`` on the same data.

Both train the same randomly initialised model (built from a config: SmolLM2-135M and Qwen2-0.5B shapes)
on the same synthetic (prompt, program) examples with the loss on program tokens only, 64 examples per
optimizer step, bf16 autocast on GPU, AdamW. Measured in the same run, timed steps after warm-up:

- ours: :class:`services.trainer.training.StepRunner` as ``run_job`` sets it up on a GPU: length
  bucketing with a padded-token budget per forward sized from free GPU memory (``auto_token_budget``),
  decoder layers under ``torch.compile`` (regional, dynamic shapes), LM head on scored positions only,
  fused AdamW, gradient accumulation over micro-batches;
- ours, eager: the same without torch.compile, at the fixed budget of the earlier measurement (32k tokens
  SmolLM2, 24k Qwen2); ``--same-micro`` adds ours at the Trainer's micro-batch;
- baseline: ``Trainer`` with its defaults (random batches padded by ``DataCollatorForSeq2Seq``, labels
  -100 on prompt and padding), the same micro-batch and accumulation, ``bf16=True`` on GPU.

Prints tokens/s (real, unpadded tokens), the ratio, and MFU: model FLOPs per token
6·N + 12·layers·hidden·seq (the PaLM formula, N = all parameters with the tied head counted once) times
real tokens/s over the GPU's dense bf16 peak (989 TFLOP/s for H100/H200 SXM). Ours skips the LM head on
prompt tokens, so its hardware FLOPs are below these model FLOPs: MFU is the usual 'model' figure.

    python bench/trainer.py                       # GPU: both shapes
    python bench/trainer.py --preset cpu          # a small CPU version (tiny shapes)

Several GPUs (``--gpus N``): for n = 1..N, the same job as ``run_job`` runs it under ``torchrun`` with
n processes (one GPU each, NCCL; on CPU gloo, one thread per process): DDP over the same global minibatch
(``--batch-size``, split by :func:`services.trainer.data.shard`; ``--weak`` keeps ``--batch-size`` per
process instead). n = 1 is the one-process path (no DDP), the baseline of the scaling ratio
tokens/s(n) / tokens/s(1) printed beside it, with the efficiency ratio / n::

    python bench/trainer.py --gpus 8                       # GPU: SmolLM2 and Qwen2 shapes, 1..8 GPUs
    python bench/trainer.py --preset cpu --gpus 2          # CPU smoke: tiny shape, 1..2 processes, gloo
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from services.common.schemas.trainer import JobCreate
from services.trainer.training import Example, StepRunner, auto_token_budget, make_example, make_optimizer

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def model_config(shape: str) -> Any:
    """Configs of the benchmarked shapes (random weights; speed does not depend on them)."""
    from transformers import LlamaConfig, Qwen2Config

    if shape == "smollm2-135m":
        return LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
            rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
        )
    if shape == "qwen2-0.5b":
        return Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
            rope_theta=1000000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
        )
    if shape == "tiny":
        return LlamaConfig(
            vocab_size=8192, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        )
    raise ValueError(shape)


def make_data(n: int, vocab: int, max_prompt: int, max_program: int, seed: int) -> list[Example]:
    """Code-like length spread: prompts 10%-100% of max_prompt, programs 10%-100% of max_program."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = rng.randint(max_prompt // 10, max_prompt)
        t = rng.randint(max_program // 10, max_program)
        out.append(
            make_example(
                [rng.randrange(3, vocab) for _ in range(p)], [rng.randrange(3, vocab) for _ in range(t)],
                max_seq_len=max_prompt + max_program,
            )
        )
    return out


def build_model(shape: str, device: torch.device, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(shape), dtype=torch.float32)
    model.config.use_cache = False
    return model.to(device)


def flops_per_token(model: Any, avg_len: float) -> float:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    return 6.0 * n + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * avg_len


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_ours(
    shape: str, data: list[Example], args: argparse.Namespace, device: torch.device,
    micro: int, max_tokens: int | None, compile: bool = False,
) -> dict[str, Any]:
    model = build_model(shape, device)
    if max_tokens == 0:  # auto, as run_job does on a GPU
        max_tokens = auto_token_budget(model.config, torch.cuda.mem_get_info(device)[0])
    job = JobCreate(model="bench", batch_size=args.batch_size, learning_rate=1e-4, max_grad_norm=1.0)
    runner = StepRunner(
        model, make_optimizer(model, job, device), device=device, micro_batch_size=micro,
        max_grad_norm=1.0, pad_id=0, max_tokens=max_tokens, compile=compile,
    )
    times, tokens = [], []
    t_first = time.perf_counter()
    warmup_s = 0.0
    for step in range(args.warmup + args.steps):
        batch = data[step * args.batch_size : (step + 1) * args.batch_size]
        sync(device)
        t0 = time.perf_counter()
        stats = runner.step(batch, 1e-4)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            tokens.append(stats.tokens)
        elif step == args.warmup - 1:
            warmup_s = time.perf_counter() - t_first
    if args.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        batch = data[: args.batch_size]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            runner.step(batch, 1e-4)
            sync(device)
        print(f"--- profile: ours {shape} micro={micro} max_tokens={max_tokens}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    fpt = flops_per_token(model, statistics.mean(len(e.input_ids) for e in data))
    extra = {
        "optimizer": "AdamW fused" if device.type == "cuda" else "AdamW", "micro": micro, "max_tokens": max_tokens,
        "compiled": runner.compiled, "warmup_s": warmup_s if args.warmup else None,
    }
    del runner, model
    if compile:
        torch._dynamo.reset()
    return _summary(times, tokens, fpt, device, extra=extra)


def bench_trainer(
    shape: str, data: list[Example], args: argparse.Namespace, device: torch.device, micro: int
) -> dict[str, Any]:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    model = build_model(shape, device)
    rows = []
    for e in data[: (args.warmup + args.steps) * args.batch_size]:
        labels = [-100] * e.n_prompt + list(e.input_ids[e.n_prompt :])
        rows.append({"input_ids": list(e.input_ids), "attention_mask": [1] * len(e.input_ids), "labels": labels})

    class Tok:  # the collator only needs the pad id and side
        pad_token_id = 0
        padding_side = "right"

        def pad(self, features: list[dict[str, Any]], **kw: Any) -> dict[str, torch.Tensor]:
            width = max(len(f["input_ids"]) for f in features)
            ids = torch.zeros((len(features), width), dtype=torch.long)
            mask = torch.zeros((len(features), width), dtype=torch.long)
            for i, f in enumerate(features):
                ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                mask[i, : len(f["input_ids"])] = 1
            return {"input_ids": ids, "attention_mask": mask}

    collator = DataCollatorForSeq2Seq(Tok(), padding=True, label_pad_token_id=-100)  # type: ignore[arg-type]
    times: list[float] = []
    tokens: list[int] = []
    per_step = args.batch_size
    real_tokens = [sum(len(r["input_ids"]) for r in rows[i * per_step : (i + 1) * per_step]) for i in range(args.warmup + args.steps)]

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = 0.0

        def on_step_begin(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            if state.global_step > args.warmup:
                times.append(time.perf_counter() - self.t0)

    targs = TrainingArguments(
        output_dir=str(args.tmp / f"hf-{shape}"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=args.batch_size // micro,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        max_grad_norm=1.0,
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=rows, data_collator=collator)  # type: ignore[arg-type]
    trainer.add_callback(Timer())
    trainer.train()
    # The Trainer shuffles; its steps see the same pool of examples, so use the pool's mean tokens per step.
    mean_tokens = statistics.mean(real_tokens)
    tokens = [round(mean_tokens)] * len(times)
    fpt = flops_per_token(model, statistics.mean(len(e.input_ids) for e in data))
    optim = str(targs.optim)
    del trainer, model
    return _summary(times, tokens, fpt, device, extra={"optimizer": optim, "micro": micro})


def _summary(
    times: list[float], tokens: list[int], fpt: float, device: torch.device, extra: dict[str, Any]
) -> dict[str, Any]:
    tps = [t / s for t, s in zip(tokens, times, strict=True)]
    med = statistics.median(tps)
    out: dict[str, Any] = {"median_step_s": statistics.median(times), "median_tokens_per_s": med,
                           "tokens_per_s": tps, **extra}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        out["device"] = name
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if peak:
            out["mfu"] = med * fpt / peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def ddp_worker(args: argparse.Namespace) -> None:
    """One process of a ``--gpus`` measurement (started by torchrun); rank 0 writes ``--result``."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    gpu = args.preset == "gpu"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)
    distributed = world > 1
    if distributed:
        dist.init_process_group("nccl" if gpu else "gloo")
    shape = args.shapes
    batch = args.batch_size * (world if args.weak else 1)
    n = (args.warmup + args.steps) * batch
    data = make_data(n, model_config(shape).vocab_size, args.max_prompt, args.max_program, seed=1)
    model = build_model(shape, device)
    # as run_job on a GPU: a token budget sized from free memory, compiled layers; CPU: a fixed budget
    max_tokens = auto_token_budget(model.config, torch.cuda.mem_get_info(device)[0]) if gpu else 4096
    job = JobCreate(model="bench", batch_size=batch, learning_rate=1e-4, max_grad_norm=1.0)
    runner = StepRunner(
        model, make_optimizer(model, job, device), device=device, micro_batch_size=batch, max_grad_norm=1.0,
        pad_id=0, max_tokens=max_tokens, compile=gpu and not args.no_compile, distributed=distributed,
    )
    times, tokens = [], []
    for step in range(args.warmup + args.steps):
        sync(device)
        if distributed:
            dist.barrier()
        t0 = time.perf_counter()
        stats = runner.step(data[step * batch : (step + 1) * batch], 1e-4)  # reports the global minibatch
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            tokens.append(stats.tokens)
    if rank == 0:
        out = _summary(times, tokens, flops_per_token(model, statistics.mean(len(e.input_ids) for e in data)),
                       device, extra={"processes": world, "global_batch": batch, "max_tokens": max_tokens,
                                      "compiled": runner.compiled, "step_tokens": tokens})  # fmt: skip
        Path(args.result).write_text(json.dumps(out))
    if distributed:
        dist.destroy_process_group()


def scaling(args: argparse.Namespace, shapes: list[str]) -> dict[str, Any]:
    """tokens/s with 1..``args.gpus`` processes per shape, each count in its own torchrun launch."""
    if args.preset == "gpu" and torch.cuda.device_count() < args.gpus:
        raise SystemExit(f"--gpus {args.gpus}: only {torch.cuda.device_count()} CUDA devices here")
    results: dict[str, Any] = {}
    root = Path(__file__).resolve().parents[1]
    args.tmp.mkdir(parents=True, exist_ok=True)
    for shape in shapes:
        runs: dict[str, Any] = {}
        for n in range(1, args.gpus + 1):
            result = args.tmp / f"scaling-{shape}-{n}.json"
            result.unlink(missing_ok=True)
            launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
                        if n > 1 else [sys.executable])  # fmt: skip
            cmd = [
                *launcher, str(Path(__file__).resolve()), "--ddp-worker", "--result", str(result),
                "--preset", args.preset, "--shapes", shape, "--batch-size", str(args.batch_size),
                "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--max-prompt", str(args.max_prompt), "--max-program", str(args.max_program),
                *(["--weak"] if args.weak else []), *(["--no-compile"] if args.no_compile else []),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if r.returncode != 0 or not result.exists():
                raise SystemExit(f"{shape} with {n} processes failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            run = json.loads(result.read_text())
            run["scaling"] = run["median_tokens_per_s"] / runs["1"]["median_tokens_per_s"] if runs else 1.0
            run["efficiency"] = run["scaling"] / n
            runs[str(n)] = run
            spread = f"{min(run['tokens_per_s']):.0f}-{max(run['tokens_per_s']):.0f}"
            line = (f"{shape:14s} {n} proc  batch {run['global_batch']:4d}  {run['median_tokens_per_s']:>10.0f} tok/s "
                    f"(steps {spread})  step {run['median_step_s']:.3f}s  scaling {run['scaling']:.2f}x  "
                    f"efficiency {run['efficiency']:.0%}")  # fmt: skip
            if "mfu" in run:
                line += f"  MFU {run['mfu']:.1%}  peak {run['peak_memory_gib']:.1f} GiB"
            print(line, flush=True)
        results[shape] = runs
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["gpu", "cpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default=None, help="comma-separated: smollm2-135m,qwen2-0.5b,tiny")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=None, help="Trainer's micro-batch (and ours, same-micro run)")
    parser.add_argument("--max-tokens", type=int, default=None, help="ours, eager: padded-token budget per forward")
    parser.add_argument("--same-micro", action="store_true", help="also run ours at the Trainer's micro-batch")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled run")
    parser.add_argument("--profile", action="store_true", help="print a torch profile of one of our steps")
    parser.add_argument("--max-prompt", type=int, default=None)
    parser.add_argument("--max-program", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--gpus", type=int, default=None,
                        help="scaling mode: DDP with 1..N processes (GPUs; on CPU gloo processes)")
    parser.add_argument("--weak", action="store_true", help="--gpus: --batch-size per process, not in all")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return
    gpu = args.preset == "gpu"
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)  # a shared small CPU: one thread is the stable measurement
    shapes = (args.shapes or ("smollm2-135m,qwen2-0.5b" if gpu else "tiny")).split(",")
    args.steps = args.steps or (12 if gpu else 4)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.max_prompt = args.max_prompt or (768 if gpu else 96)
    args.max_program = args.max_program or (384 if gpu else 64)
    if not gpu and args.batch_size == 64:
        args.batch_size = 16
    args.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "btp-bench-trainer"
    n = (args.warmup + args.steps) * args.batch_size
    results: dict[str, Any] = {}
    print(f"device={device} batch={args.batch_size} steps={args.steps} (+{args.warmup} warm-up)")
    if args.gpus:
        if args.gpus < 1:
            raise SystemExit("--gpus must be at least 1")
        results = scaling(args, shapes)
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    for shape in shapes:
        vocab = model_config(shape).vocab_size
        data = make_data(n, vocab, args.max_prompt, args.max_program, seed=1)
        # The Trainer materialises fp32 logits for every position: 16 x ~1100 x 152k OOMs on 80 GB for
        # Qwen2, so its micro-batch is 8 there. Ours scores program positions only and cuts micro-batches
        # by a padded-token budget instead.
        micro = args.micro_batch_size or (4 if not gpu else (8 if vocab > 100_000 else 16))
        budget = args.max_tokens or (4096 if not gpu else (24576 if vocab > 100_000 else 32768))
        base = bench_trainer(shape, data, args, device, micro)
        runs: dict[str, dict[str, Any]] = {"HF Trainer": base}
        if args.same_micro:
            runs["ours, same micro"] = bench_ours(shape, data, args, device, micro, None)
        runs["ours, eager"] = bench_ours(shape, data, args, device, args.batch_size, budget)
        if not args.no_compile:
            auto = 0 if gpu else budget
            runs["ours"] = bench_ours(shape, data, args, device, args.batch_size, auto, compile=True)
        results[shape] = {name: r for name, r in runs.items()}
        for name, r in runs.items():
            ratio = r["median_tokens_per_s"] / base["median_tokens_per_s"]
            r["speedup"] = ratio
            line = f"{shape:14s} {name:18s} {r['median_tokens_per_s']:>10.0f} tok/s  step {r['median_step_s']:.3f}s  {ratio:.2f}x"
            if "mfu" in r:
                line += f"  MFU {r['mfu']:.1%}  peak {r['peak_memory_gib']:.1f} GiB"
            if r.get("max_tokens") is not None:
                line += f"  budget {r['max_tokens']}"
            if r.get("warmup_s") is not None:
                line += f"  warm-up {r['warmup_s']:.1f}s"
            print(line, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
