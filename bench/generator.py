"""Beam search throughput: services.generator.cuda against transformers' generate(num_beams=3).

    python bench/generator.py --device cuda          # H100: SmolLM2-135M and Qwen2-0.5B shapes, batch 1/8/32/128
    python bench/generator.py --device cpu           # CPU: SmolLM2 shape, batch 1/8, 64 new tokens

Models are built from configs with random weights (speed does not depend on the weights); prompts are
128 random token ids; EOS is suppressed in every engine so all of them decode exactly ``--new`` tokens.
Every number is measured in this run: beam tokens/s = prompts x k x new tokens / wall time of the call
(prefill included), ms/step = wall time / new tokens, peak = torch.cuda.max_memory_allocated during the
call (weights included).

The memory floor of a decoding step is the bytes the step must read divided by the memory bandwidth
measured in this run (:func:`measure_bandwidth`: the median of timed device-to-device copies of
``--bw-mib`` MiB, counting the read and the write; CUDA events on a GPU). The bytes are the weights plus
the KV cache: ``2 x layers x kv_heads x head_dim x dtype bytes`` per position (23,040 B for SmolLM2-135M
in bf16), averaged over the decode (step t reads ``prompt + t`` positions). Two floors are printed:
"shared", where each prompt's KV is read once for its k beams and only the generated parts are per beam
(``prompts x (prompt_len + k x t)`` positions), and "per beam", where every beam reads its own copy of
the prompt (``prompts x k x (prompt_len + t)``). The step / floor ratio uses the shared floor, the lower
one, so it never flatters the decoder.

Ours: median of ``--reps`` warm calls (the first call, which captures the CUDA graph, is reported as
"cold"). transformers: ``--hf-runs`` calls per size (it varies by tens of percent between calls on the
same machine); reported as the median with the min-max spread, and the speedup as the median ratio with
the range it spans over those calls. Its per-step time comes from a stopping criterion that stamps every
step. Batches above ``--hf-max-batch`` time transformers on ``--hf-short`` steps only and say so.

    python bench/generator.py --smoke                # seconds on a CPU: a 2-layer model, checks the script runs
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

SHAPES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "smollm2-135m": (LlamaConfig, LlamaForCausalLM, dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        max_position_embeddings=8192)),
    "tiny": (LlamaConfig, LlamaForCausalLM, dict(  # --smoke: checks that the script runs, in seconds on a CPU
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=1024)),
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


def measure_bandwidth(device: str, mib: int = 1024, reps: int = 10) -> float:
    """Memory bandwidth in bytes/s, measured now: the median of ``reps`` copies of ``mib`` MiB from one buffer
    to another on ``device`` (each copy reads and writes the bytes once, so it moves ``2 x mib`` MiB).
    On CUDA each copy is timed with CUDA events around it, after warm-up copies."""
    n = mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times: list[float] = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / statistics.median(times)


def kv_bytes_per_position(config: Any, dtype: torch.dtype) -> int:
    """KV-cache bytes of one position of one sequence: K and V of every layer."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def step_bytes(weight_bytes: int, kv_pos: int, prompts: int, k: int, prompt_len: int, new: int) -> tuple[float, float]:
    """Bytes a decoding step reads on average over ``new`` steps: (shared prompt KV, per-beam prompt KV)."""
    mean_t = (new - 1) / 2  # step t attends over prompt_len + t positions (the token it writes included)
    shared = weight_bytes + kv_pos * prompts * (prompt_len + k * (mean_t + 1))
    per_beam = weight_bytes + kv_pos * prompts * k * (prompt_len + mean_t + 1)
    return shared, per_beam


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
    bandwidth = measure_bandwidth(device, args.bw_mib)
    print(f"# measured memory bandwidth on {device}: {bandwidth / 1e12:.3f} TB/s "
          f"(median of timed {args.bw_mib} MiB device-to-device copies, read + write)", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        model = build(name, device, dtype)
        # tied embeddings are one tensor: parameters() yields it once
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        kv_pos = kv_bytes_per_position(model.config, dtype)
        for b in args.batches:
            shared, per_beam = step_bytes(weight_bytes, kv_pos, b, k, args.prompt_len, new)
            floor_ms, floor_beam_ms = 1e3 * shared / bandwidth, 1e3 * per_beam / bandwidth
            gen = torch.Generator().manual_seed(b)
            prompts = torch.randint(1, model.config.vocab_size, (b, args.prompt_len), generator=gen)
            plist = prompts.tolist()
            kw: dict[str, Any] = dict(num_beams=k, max_new_tokens=new, eos_token_ids=set(), pad_token_id=0)
            row: dict[str, Any] = dict(model=name, batch=b, k=k, new=new, bandwidth_tb_s=bandwidth / 1e12,
                                       weight_bytes=weight_bytes, kv_bytes_per_position=kv_pos,
                                       step_bytes_shared=shared, step_bytes_per_beam=per_beam,
                                       floor_ms=floor_ms, floor_per_beam_ms=floor_beam_ms)
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
                runs = [run_hf(model, prompts.to(device), k, hf_new, device) for _ in range(args.hf_runs)]
                hf_all = sorted(r[0] for r in runs)
                hf_s = statistics.median(hf_all)
                hf_out = runs[-1][3]
                hf_tok = [b * k * hf_new / s for s in hf_all]
                row.update(hf_new=hf_new, hf_runs=len(runs), hf_s=hf_s, hf_s_all=hf_all,
                           hf_ms_step=1e3 * hf_s / hf_new,
                           hf_median_step_ms=statistics.median(r[1] for r in runs),
                           hf_tok_s=b * k * hf_new / hf_s, hf_tok_s_min=min(hf_tok), hf_tok_s_max=max(hf_tok),
                           hf_peak_mib=max(r[2] for r in runs))
                ours_tok = row["ours_tok_s"]
                row.update(speedup=ours_tok / row["hf_tok_s"], speedup_min=ours_tok / max(hf_tok),
                           speedup_max=ours_tok / min(hf_tok))
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
        bw = rows[0]["bandwidth_tb_s"] if rows else float("nan")
        out.append(f"Floors at the measured {bw:.2f} TB/s; step bytes = weights + KV read (shared prompt / per beam).")
        out.append("| model | prompts | ours beam tok/s | ours ms/step | floor ms (shared / per beam) | step / floor | "
                   "ours peak MiB | HF beam tok/s median (min-max, runs) | HF ms/step (median) | HF peak MiB | "
                   "speedup median (range) | same best beam | best-beam score ours - HF |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            hf = r.get("hf_tok_s")
            note = "" if r.get("hf_new", r["new"]) == r["new"] else f", {r['hf_new']} steps"
            out.append(
                f"| {r['model']} | {r['batch']} | {r['ours_tok_s']:,.0f} | {r['ours_ms_step']:.2f} | "
                f"{r['floor_ms']:.3f} / {r['floor_per_beam_ms']:.3f} | {r['ours_ms_step'] / r['floor_ms']:.1f}x | "
                f"{r['ours_peak_mib']:,.0f} | "
                + (f"{hf:,.0f} ({r['hf_tok_s_min']:,.0f}-{r['hf_tok_s_max']:,.0f}, {r['hf_runs']}{note}) | "
                   f"{r['hf_ms_step']:.1f} ({r['hf_median_step_ms']:.1f}) | {r['hf_peak_mib']:,.0f} | "
                   f"{r['speedup']:.1f}x ({r['speedup_min']:.1f}-{r['speedup_max']:.1f}) | "
                   f"{r.get('same_best_beam', float('nan')):.2f} | {r.get('best_gap', float('nan')):+.2f} |"
                   if hf else "skipped | | | | | |"))
    else:
        out.append("| model | prompts | cuda_beam (torch ops) tok/s | reference beam_search tok/s | "
                   "HF generate tok/s median (min-max, runs) | ours / HF median (range) | reference / HF | "
                   "ms/step / memory floor |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in rows:
            hf, ref = r.get("hf_tok_s", float("nan")), r.get("ref_tok_s", float("nan"))
            spread = (f" ({r['hf_tok_s_min']:.1f}-{r['hf_tok_s_max']:.1f}, {r['hf_runs']})" if "hf_runs" in r else "")
            ratio = (f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})" if "speedup" in r else "")
            out.append(f"| {r['model']} | {r['batch']} | {r['ours_tok_s']:.1f} | {ref:.1f} | {hf:.1f}{spread} | "
                       f"{ratio} | {ref / hf:.2f}x | {r['ours_ms_step'] / r['floor_ms']:.1f}x |")
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
    p.add_argument("--hf-runs", type=int, default=5, help="transformers calls per size (median and spread)")
    p.add_argument("--bw-mib", type=int, default=None, help="MiB copied to measure the memory bandwidth")
    p.add_argument("--smoke", action="store_true", help="seconds: the tiny model, 1 prompt, 8 tokens, 2 HF runs")
    p.add_argument("--reference", action="store_true", help="also time services.generator.beam.beam_search")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--profile", action="store_true", help="kernel breakdown of eager steps (first model, last batch)")
    args = p.parse_args()
    cpu = args.device == "cpu"
    if args.smoke:
        args.models = args.models or ["tiny"]
        args.batches = args.batches or [1, 2]
        args.new = args.new or 8
        args.prompt_len = min(args.prompt_len, 16)
        args.hf_runs = min(args.hf_runs, 2)
        args.bw_mib = args.bw_mib or 64
    args.bw_mib = args.bw_mib or (1024 if not cpu else 256)
    args.models = args.models or (["smollm2-135m"] if cpu else ["smollm2-135m", "qwen2-0.5b"])
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
