"""Beam search throughput: services.generator.cuda against transformers' generate(num_beams=3).

    python bench/generator.py --device cuda          # H100: SmolLM2-135M and Qwen2-0.5B shapes, batch 1/8/32/128
    python bench/generator.py --device cpu           # CPU: SmolLM2 shape, batch 1/8, 64 new tokens

Models are built from configs with random weights (speed does not depend on the weights); prompts are
128 random token ids; EOS is suppressed in every engine so all of them decode exactly ``--new`` tokens.
Every number is measured in this run: beam tokens/s = prompts x k x new tokens / wall time of the call
(prefill included), ms/step = wall time / new tokens, the HBM floor = weight bytes / 3.35 TB/s (one read
of the weights per step), peak = torch.cuda.max_memory_allocated during the call (weights included).
Ours: median of ``--reps`` warm calls (the first call, which captures the CUDA graph, is reported as
"cold"). transformers: one call per size (it takes ~50 ms a step); its median per-step time comes from a
stopping criterion that stamps every step. Batches above ``--hf-max-batch`` time transformers on
``--hf-short`` steps only and say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, StoppingCriteria

from services.generator.cuda import cuda_beam_search

HBM_BYTES_PER_S = 3.35e12
SHAPES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "smollm2-135m": (LlamaConfig, LlamaForCausalLM, dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        max_position_embeddings=8192)),
    "qwen2-0.5b": (Qwen2Config, Qwen2ForCausalLM, dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        max_position_embeddings=32768)),
}


class StepClock(StoppingCriteria):
    """Stamps the host clock at every decoding step of generate() (it syncs every step anyway)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def median_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return 1e3 * statistics.median(gaps) if gaps else float("nan")


def build(name: str, device: str, dtype: torch.dtype) -> Any:
    cfg_cls, model_cls, kw = SHAPES[name]
    cfg = cfg_cls(**kw, eos_token_id=None, bos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls(cfg).to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Any, device: str) -> tuple[float, float, Any]:
    """Wall seconds, peak GPU MiB, result."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return dt, peak, out


def forced_scores(model: Any, prompts: list[list[int]], gens: list[list[int]], chunk: int = 4) -> list[float]:
    """Sum of log P(generated token | prefix) from one teacher-forced forward per prompt chunk."""
    dev = next(model.parameters()).device
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(prompts), chunk):
            ps, gs = prompts[i:i + chunk], gens[i:i + chunk]
            ids = torch.tensor([p + g for p, g in zip(ps, gs, strict=True)], device=dev)
            lp = torch.log_softmax(model(ids).logits[:, len(ps[0]) - 1:-1].float(), -1)
            tgt = torch.tensor(gs, device=dev)
            out += lp.gather(2, tgt[..., None])[..., 0].sum(1).tolist()
    return out


def run_hf(model: Any, prompts: torch.Tensor, k: int, new: int, device: str) -> tuple[float, float, float, Any]:
    clock = StepClock()
    with torch.inference_mode():
        dt, peak, out = timed(lambda: model.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts), num_beams=k, num_return_sequences=k,
            do_sample=False, length_penalty=0.0, max_new_tokens=new, eos_token_id=None, pad_token_id=0,
            stopping_criteria=[clock]), device)
    return dt, clock.median_ms(), peak, out


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    device, k, new = args.device, args.k, args.new
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows: list[dict[str, Any]] = []
    for name in args.models:
        model = build(name, device, dtype)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        floor_ms = 1e3 * weight_bytes / HBM_BYTES_PER_S
        for b in args.batches:
            gen = torch.Generator().manual_seed(b)
            prompts = torch.randint(1, model.config.vocab_size, (b, args.prompt_len), generator=gen)
            plist = prompts.tolist()
            kw: dict[str, Any] = dict(num_beams=k, max_new_tokens=new, eos_token_ids=set(), pad_token_id=0)
            row: dict[str, Any] = dict(model=name, batch=b, k=k, new=new, floor_ms=floor_ms)
            cold = float("nan")
            if device == "cuda":  # the first call of a shape captures the CUDA graph
                cold = timed(lambda m=model, plist=plist, kw=kw: cuda_beam_search(m, plist, **kw), device)[0]
            reps = [timed(lambda m=model, plist=plist, kw=kw: cuda_beam_search(m, plist, **kw), device)
                    for _ in range(args.reps)]
            ours_s = statistics.median(r[0] for r in reps)
            ours = reps[-1][2]
            row.update(ours_s=ours_s, ours_cold_s=cold, ours_ms_step=1e3 * ours_s / new,
                       ours_tok_s=b * k * new / ours_s, ours_peak_mib=max(r[1] for r in reps))
            if args.reference:
                from services.generator.beam import beam_search

                with torch.inference_mode():
                    ref_s, _, _ = timed(lambda m=model, plist=plist, kw=kw: beam_search(m, plist, **kw), device)
                row.update(ref_s=ref_s, ref_tok_s=b * k * new / ref_s, ref_ms_step=1e3 * ref_s / new)
            if b <= args.hf_max_batch or args.hf_short > 0:
                hf_new = new if b <= args.hf_max_batch else args.hf_short
                hf_s, hf_step, hf_peak, hf_out = run_hf(model, prompts.to(device), k, hf_new, device)
                row.update(hf_new=hf_new, hf_s=hf_s, hf_ms_step=1e3 * hf_s / hf_new, hf_median_step_ms=hf_step,
                           hf_tok_s=b * k * hf_new / hf_s, hf_peak_mib=hf_peak)
                if hf_new == new:  # quality: teacher-forced scores of both best beams under the same weights
                    best = hf_out[:, args.prompt_len:].view(b, k, -1)[:, 0].tolist()
                    row["same_best_beam"] = sum(o[0].token_ids == h for o, h in zip(ours, best, strict=True)) / b
                    ours_tf = forced_scores(model, plist, [o[0].token_ids for o in ours])
                    hf_tf = forced_scores(model, plist, best)
                    row["best_gap"] = statistics.median(a - h for a, h in zip(ours_tf, hf_tf, strict=True))
                    row["lp_err_per_token"] = max(
                        abs(sum(o[0].token_logprobs) - f) / new for o, f in zip(ours, ours_tf, strict=True))
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
        gc.collect()  # HF modules hold reference cycles: free the weights and our cached session now
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def profile(args: argparse.Namespace) -> None:
    """Kernel-time breakdown of eager decoding steps (no graph) for the first model and batch."""
    from services.generator.cuda import search as cuda_search

    model = build(args.models[0], "cuda", torch.bfloat16)
    b = args.batches[-1]
    plist = torch.randint(1, model.config.vocab_size, (b, args.prompt_len)).tolist()
    cuda_beam_search(model, plist, num_beams=args.k, max_new_tokens=args.new, eos_token_ids=set(), pad_token_id=0)
    session = cuda_search._DECODERS[model].session
    assert session is not None
    with torch.inference_mode():
        session.search.reset()
        session.kv.reset()
        for _ in range(3):
            session.body()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                session.body()
            torch.cuda.synchronize()
    print(f"# {args.models[0]} batch {b}: 5 eager steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=70))


def table(rows: list[dict[str, Any]], device: str) -> str:
    out = []
    if device == "cuda":
        out.append("| model | prompts | ours beam tok/s | ours ms/step | step / HBM floor | ours peak MiB | "
                   "HF beam tok/s | HF ms/step (median) | HF peak MiB | speedup (tok/s) | same best beam | best-beam score ours - HF |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            hf = r.get("hf_tok_s")
            note = "" if r.get("hf_new", r["new"]) == r["new"] else f" ({r['hf_new']} steps)"
            out.append(
                f"| {r['model']} | {r['batch']} | {r['ours_tok_s']:,.0f} | {r['ours_ms_step']:.2f} | "
                f"{r['ours_ms_step'] / r['floor_ms']:.1f}x ({r['floor_ms']:.3f} ms) | {r['ours_peak_mib']:,.0f} | "
                + (f"{hf:,.0f}{note} | {r['hf_ms_step']:.1f} ({r['hf_median_step_ms']:.1f}) | {r['hf_peak_mib']:,.0f} | "
                   f"{r['ours_tok_s'] / hf:.1f}x | {r.get('same_best_beam', float('nan')):.2f} | "
                   f"{r.get('best_gap', float('nan')):+.2f} |"
                   if hf else "skipped | | | | | |"))
    else:
        out.append("| model | prompts | cuda_beam (torch ops) tok/s | reference beam_search tok/s | HF generate tok/s | "
                   "ours / HF | reference / HF |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            hf, ref = r.get("hf_tok_s", float("nan")), r.get("ref_tok_s", float("nan"))
            out.append(f"| {r['model']} | {r['batch']} | {r['ours_tok_s']:.1f} | {ref:.1f} | {hf:.1f} | "
                       f"{r['ours_tok_s'] / hf:.2f}x | {ref / hf:.2f}x |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=sorted(SHAPES), default=None)
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--new", type=int, default=None, help="new tokens (forced)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--hf-max-batch", type=int, default=32, help="larger batches time transformers on --hf-short steps")
    p.add_argument("--hf-short", type=int, default=32)
    p.add_argument("--reference", action="store_true", help="also time services.generator.beam.beam_search")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--profile", action="store_true", help="kernel breakdown of eager steps (first model, last batch)")
    args = p.parse_args()
    cpu = args.device == "cpu"
    args.models = args.models or (["smollm2-135m"] if cpu else list(SHAPES))
    args.batches = args.batches or ([1, 8] if cpu else [1, 8, 32, 128])
    args.new = args.new or (64 if cpu else 256)
    args.reference = args.reference or cpu
    if cpu:
        args.reps = min(args.reps, 1)
    if args.device == "cuda":
        print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    if args.profile:
        profile(args)
        return
    rows = bench(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.device))


if __name__ == "__main__":
    main()
