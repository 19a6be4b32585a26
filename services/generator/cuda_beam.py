"""GPU beam search fast path: same function and results as ``services.generator.beam.beam_search``.

Why it is fast (``generate(num_beams=3)`` spends ~50 ms a step in host overhead on an H100):

- Prompts x beams are one batch of ``B*k`` rows. The whole decoding step (model forward, top-k over
  beams x vocabulary, finished/stop bookkeeping) runs on the GPU with no host synchronisation; on CUDA it
  is captured once as a ``torch.cuda.CUDAGraph`` and replayed. Whether every prompt is done is read back
  every ``_CHECK_EVERY`` steps, one interval late, through pinned memory, so the GPU never idles.
- Llama and Qwen2 models run through a compact decoder that reads the HF model's weights (RMSNorm,
  rotary, GQA attention, SwiGLU) over a static, preallocated KV cache. Beams are never copied: the
  cache row ``r`` holds the key/value that beam ``r`` wrote at each position, and a back-pointer table
  ``anc[r, j]`` (re-ordered in place each step with ``index_select``/``index_copy_``, a few hundred KB)
  says which row holds position ``j`` of beam ``r``'s history. The Triton attention kernel gathers
  through it, so shared prompts and shared prefixes are read once from HBM (L2 serves the siblings).
- Triton kernels fuse residual-add + RMSNorm, rotary + cache write, decode attention (split over the
  sequence when the batch is small) and SiLU x up; q/k/v and gate/up projections are fused matmuls.
- Stop strings become a per-string automaton over token ids (KMP states x vocabulary, built once per
  tokenizer and string), so "decoded text contains the stop string" is a gather per step on the GPU.

Other architectures (or models wrapped by PEFT) use the HF forward with its own cache re-ordered in
place, under the same GPU-side selection. On a machine without CUDA everything runs with plain torch
ops (that is what the CPU tests compare with ``transformers``); ``TRITON_INTERPRET=1`` runs the Triton
kernels on the CPU too. Nothing touches CUDA at import time.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from services.common.errors import ValidationError

try:
    from services.generator.beam import Beam
except ImportError:  # pragma: no cover - the reference module lands separately

    @dataclass
    class Beam:  # type: ignore[no-redef]
        """One hypothesis (same fields as services.generator.beam.Beam)."""

        token_ids: list[int]
        token_logprobs: list[float]
        finished: bool


try:
    import triton
    import triton.language as tl

    _HAS_TRITON = True
except ImportError:  # pragma: no cover - CPU-only installs
    _HAS_TRITON = False

_NEG = -1.0e9  # transformers' "never chosen" offset (finite, so sums stay ordered)
_CHECK_EVERY = 8
_BLOCK_N = 64  # keys per attention block
_ARCHS = ("llama", "qwen2")

if _HAS_TRITON:

    @triton.jit
    def _add_rmsnorm_kernel(x_ptr, d_ptr, w_ptr, out_ptr, res_ptr, N, eps, HAS_D: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        x = tl.load(x_ptr + row * N + cols, mask=m, other=0.0)
        if HAS_D:
            x = (x.to(tl.float32) + tl.load(d_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)).to(x.dtype)
            tl.store(res_ptr + row * N + cols, x, mask=m)
        xf = x.to(tl.float32)
        y = xf * tl.rsqrt(tl.sum(xf * xf, 0) / N + eps)
        w = tl.load(w_ptr + cols, mask=m, other=0.0)
        tl.store(out_ptr + row * N + cols, w * y.to(w.dtype), mask=m)

    @triton.jit
    def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, pad_ptr, t_ptr, q_ptr, k_ptr, v_ptr, T,
                           H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr, NHP: tl.constexpr,
                           KVP: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        HALF: tl.constexpr = D // 2
        i = tl.arange(0, HALF)[None, :]
        hh = tl.arange(0, NHP)[:, None]  # q heads then k heads
        live = hh < H + KVH
        t = tl.load(t_ptr)
        pos = t - tl.load(pad_ptr + r)
        c1 = tl.load(cos_ptr + pos * D + i)
        c2 = tl.load(cos_ptr + pos * D + HALF + i)
        s1 = tl.load(sin_ptr + pos * D + i)
        s2 = tl.load(sin_ptr + pos * D + HALF + i)
        src = qkv_ptr + r * ((H + 2 * KVH) * D) + hh * D
        x1 = tl.load(src + i, mask=live, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF + i, mask=live, other=0.0).to(tl.float32)
        y1 = (x1 * c1 - x2 * s1).to(q_ptr.dtype.element_ty)
        y2 = (x2 * c2 + x1 * s2).to(q_ptr.dtype.element_ty)
        is_q = hh < H
        tl.store(q_ptr + (r * H + hh) * D + i, y1, mask=is_q)
        tl.store(q_ptr + (r * H + hh) * D + HALF + i, y2, mask=is_q)
        kdst = k_ptr + (r * T + t) * (KVH * D) + (hh - H) * D
        is_k = (hh >= H) & live
        tl.store(kdst + i, y1, mask=is_k)
        tl.store(kdst + HALF + i, y2, mask=is_k)
        kv = tl.arange(0, KVP)[:, None]
        dv = tl.arange(0, D)[None, :]
        vm = kv < KVH
        vsrc = qkv_ptr + r * ((H + 2 * KVH) * D) + (H + KVH + kv) * D + dv
        tl.store(v_ptr + (r * T + t) * (KVH * D) + kv * D + dv, tl.load(vsrc, mask=vm, other=0.0), mask=vm)

    @triton.jit
    def _decode_attn_kernel(q_ptr, k_ptr, v_ptr, anc_ptr, pad_ptr, t_ptr, o_ptr, m_ptr, l_ptr, scale, T, SPLIT_LEN,
                            KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                            BLOCK_N: tl.constexpr, NSPLIT: tl.constexpr, PREC: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # row * KVH + kv head
        sp = tl.program_id(1)
        r = pid // KVH
        h = pid % KVH
        t = tl.load(t_ptr)
        lo = tl.maximum(tl.load(pad_ptr + r), sp * SPLIT_LEN)
        hi = tl.minimum(t + 1, (sp + 1) * SPLIT_LEN)
        g = tl.arange(0, GP)
        d = tl.arange(0, D)
        gm = g < G
        q = tl.load(q_ptr + (pid * G + g)[:, None] * D + d[None, :], mask=gm[:, None], other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        for start in range(lo, hi, BLOCK_N):
            j = start + tl.arange(0, BLOCK_N)
            valid = j < hi
            src = tl.load(anc_ptr + r * T + j, mask=valid, other=0)
            off = (src * T + j) * (KVH * D) + h * D
            k = tl.load(k_ptr + off[:, None] + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + off[:, None] + d[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
            m_i = m_new
        if NSPLIT == 1:
            out = acc / l_i[:, None]
            tl.store(o_ptr + (pid * G + g)[:, None] * D + d[None, :], out.to(o_ptr.dtype.element_ty), mask=gm[:, None])
        else:
            base = (pid * NSPLIT + sp) * GP + g
            tl.store(o_ptr + base[:, None] * D + d[None, :], acc)
            tl.store(m_ptr + base, m_i)
            tl.store(l_ptr + base, l_i)

    @triton.jit
    def _attn_combine_kernel(part_ptr, m_ptr, l_ptr, out_ptr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                             NSPLIT: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # (row * KVH + kv head) * G + g
        rh = pid // G
        g = pid % G
        sp = tl.arange(0, NSPLIT)
        d = tl.arange(0, D)
        base = (rh * NSPLIT + sp) * GP + g
        m = tl.load(m_ptr + base)
        w = tl.exp(m - tl.max(m, 0))
        den = tl.sum(tl.load(l_ptr + base) * w, 0)
        acc = tl.load(part_ptr + base[:, None] * D + d[None, :])
        out = tl.sum(acc * w[:, None], 0) / den
        tl.store(out_ptr + pid * D + d, out.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, N, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = cols < N
        g = tl.load(gu_ptr + r * 2 * N + cols, mask=m, other=0.0).to(tl.float32)
        u = tl.load(gu_ptr + r * 2 * N + N + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + r * N + cols, (g / (1.0 + tl.exp(-g)) * u).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _chunk_topk_kernel(x_ptr, val_ptr, idx_ptr, m_ptr, s_ptr, V, NCHUNK, C: tl.constexpr, BLOCK: tl.constexpr):
        """Per (row, chunk of the vocabulary): the chunk's best C logits and its (max, sum exp) for logsumexp."""
        r = tl.program_id(0).to(tl.int64)
        ch = tl.program_id(1)
        cols = ch * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + r * V + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        mx = tl.max(x, 0)
        out = (r * NCHUNK + ch) * C
        tl.store(m_ptr + r * NCHUNK + ch, mx)
        tl.store(s_ptr + r * NCHUNK + ch, tl.sum(tl.exp(x - mx), 0))
        for c in tl.static_range(C):
            best = tl.max(x, 0)
            at = tl.min(tl.where(x == best, cols, 2147483647), 0)
            tl.store(val_ptr + out + c, best)
            tl.store(idx_ptr + out + c, at)
            x = tl.where(cols == at, float("-inf"), x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rmsnorm_torch(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm / Qwen2RMSNorm."""
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class _KV:
    """Static KV cache, back-pointer table and per-row offsets for one batch shape."""

    def __init__(self, dec: _CompactDecoder, rows: int, length: int, device: torch.device) -> None:
        shape = (dec.n_layers, rows, length, dec.n_kv, dec.head_dim)
        self.k = torch.zeros(shape, dtype=dec.dtype, device=device)
        self.v = torch.zeros(shape, dtype=dec.dtype, device=device)
        self.anc = torch.zeros((rows, length), dtype=torch.long, device=device)
        self.anc0 = torch.zeros_like(self.anc)
        self.pad = torch.zeros(rows, dtype=torch.long, device=device)
        self.t = torch.zeros(1, dtype=torch.long, device=device)
        self.t0 = 0
        self.rows, self.length = rows, length
        self.ar_rows = torch.arange(rows, device=device)
        self.ar_len = torch.arange(length, device=device)
        pos = torch.arange(length, device=device)[None]
        cos, sin = dec.rotary(torch.zeros(1, dtype=torch.float32, device=device), pos)
        self.cos, self.sin = cos[0].float().contiguous(), sin[0].float().contiguous()
        programs = rows * dec.n_kv
        self.nsplit = 1  # split the sequence until the grid has ~1k programs, each doing >= 2 key blocks
        while programs * self.nsplit < 1024 and self.nsplit < 16 and length // (self.nsplit * 2) >= 2 * _BLOCK_N:
            self.nsplit *= 2
        self.split_len = -(-length // (self.nsplit * _BLOCK_N)) * _BLOCK_N

    def reset(self) -> None:
        self.anc.copy_(self.anc0)
        self.t.fill_(self.t0)

    def advance(self, parents: torch.Tensor) -> None:
        """Re-order the back-pointers for the new beams and claim position ``t`` of each row."""
        self.anc.copy_(self.anc.index_select(0, parents))
        self.anc.index_copy_(1, self.t, self.ar_rows[:, None])


class _CompactDecoder:
    """Llama/Qwen2-style forward over a HF model's weights and a :class:`_KV` (fused q/k/v and gate/up)."""

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = getattr(model, "config", None)
        inner = getattr(model, "model", None)
        if cfg is None or inner is None or getattr(cfg, "model_type", None) not in _ARCHS:
            return False
        if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "use_sliding_window", False):
            return False
        rope = getattr(cfg, "rope_scaling", None) or {}
        if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) in ("dynamic", "longrope"):
            return False
        try:
            layers = list(inner.layers)
            mods = [model.lm_head, inner.embed_tokens, inner.norm, inner.rotary_emb]
            for layer in layers:
                a, m = layer.self_attn, layer.mlp
                mods += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        except AttributeError:
            return False
        linears = [mods[0], *mods[4:]]
        if any(type(x) is not torch.nn.Linear for x in linears) or model.lm_head.bias is not None:
            return False
        return len(layers) == cfg.num_hidden_layers and all(
            layer.self_attn.o_proj.bias is None and layer.mlp.down_proj.bias is None for layer in layers
        )

    def __init__(self, model: Any) -> None:
        cfg, inner = model.config, model.model
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.rotary = inner.rotary_emb
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.dtype = self.embed.dtype
        self.fused: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self.layer_w: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._stamp: tuple[tuple[int, int], ...] = ()
        self.session: _Session | None = None
        self.lock = threading.Lock()  # one search at a time owns the session's buffers and graph
        self.refresh(model)  # the model itself is not kept: the cache of decoders is keyed weakly on it

    @staticmethod
    def _stamp_of(model: Any) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), p._version) for p in model.parameters())

    def refresh(self, model: Any) -> None:
        """(Re)build the fused weights if the model's parameters changed since last time (in place if shapes match)."""
        stamp = self._stamp_of(model)
        if stamp == self._stamp:
            return
        fused: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        layer_w = []
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            wqkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
            biases = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
            bqkv = None
            if any(b is not None for b in biases):
                ws = [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
                bqkv = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for b, w in zip(biases, ws, strict=True)])
            wgu = torch.cat([m.gate_proj.weight, m.up_proj.weight])
            fused.append((wqkv, bqkv, wgu))
            layer_w.append((layer.input_layernorm.weight, a.o_proj.weight, layer.post_attention_layernorm.weight,
                            m.down_proj.weight))
        moved = [p for p, _ in stamp] != [p for p, _ in self._stamp]  # new tensors: captured graphs are stale
        if not moved and len(self.fused) == len(fused) and all(
            x.shape == y.shape for old, new in zip(self.fused, fused, strict=True) for x, y in zip(old, new, strict=True)
            if x is not None and y is not None
        ):
            for old, new in zip(self.fused, fused, strict=True):  # keep addresses: captured graphs stay valid
                for x, y in zip(old, new, strict=True):
                    if x is not None and y is not None:
                        x.copy_(y)
        else:
            self.fused, self.session = fused, None
        self.layer_w = layer_w
        self.embed, self.final_norm, self.lm_head = (
            model.model.embed_tokens.weight, model.model.norm.weight, model.lm_head.weight)
        self._stamp = self._stamp_of(model)

    def prefill(self, kv: _KV, ids: torch.Tensor, pad: torch.Tensor, k: int) -> torch.Tensor:
        """Run the left-padded prompts (B, P), write their K/V into rows ``b*k``; last-position logits (B, V)."""
        b, p = ids.shape
        h_, kvh, d = self.n_heads, self.n_kv, self.head_dim
        pos = (torch.arange(p, device=ids.device)[None] - pad[:, None]).clamp(min=0)
        cos, sin = kv.cos[pos][:, :, None].to(self.dtype), kv.sin[pos][:, :, None].to(self.dtype)
        j = torch.arange(p, device=ids.device)
        allowed = (j[None, None, :] <= j[None, :, None]) & (j[None, None, :] >= pad[:, None, None])
        mask = (allowed | torch.eye(p, dtype=torch.bool, device=ids.device))[:, None]
        x = F.embedding(ids, self.embed)
        for li, ((wqkv, bqkv, wgu), (w_in, w_o, w_post, w_down)) in enumerate(zip(self.fused, self.layer_w, strict=True)):
            qkv = F.linear(_rmsnorm_torch(x, w_in, self.eps), wqkv, bqkv).view(b, p, h_ + 2 * kvh, d)
            q, kk, v = qkv[:, :, :h_], qkv[:, :, h_:h_ + kvh], qkv[:, :, h_ + kvh:]
            q = q * cos + _rotate_half(q) * sin
            kk = kk * cos + _rotate_half(kk) * sin
            kv.k[li, ::k, :p] = kk
            kv.v[li, ::k, :p] = v
            att = F.scaled_dot_product_attention(q.transpose(1, 2), kk.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask, scale=self.scale, enable_gqa=kvh != h_)
            x = x + F.linear(att.transpose(1, 2).reshape(b, p, h_ * d), w_o)
            hh = _rmsnorm_torch(x, w_post, self.eps)
            gu = F.linear(hh, wgu)
            g, u = gu.chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, w_down)
        return F.linear(_rmsnorm_torch(x[:, -1], self.final_norm, self.eps), self.lm_head)

    def decode(self, kv: _KV, tokens: torch.Tensor, fast: bool, out: torch.Tensor) -> None:
        """One token per row at cache position ``kv.t``; logits (rows, V) into ``out``."""
        x = F.embedding(tokens, self.embed)
        delta: torch.Tensor | None = None
        for li, ((wqkv, bqkv, wgu), (w_in, w_o, w_post, w_down)) in enumerate(zip(self.fused, self.layer_w, strict=True)):
            h, x = self._add_norm(x, delta, w_in, fast)
            q = self._rope_write(F.linear(h, wqkv, bqkv), kv, li, fast)
            o = F.linear(self._attend(q, kv, li, fast), w_o)
            h, x = self._add_norm(x, o, w_post, fast)
            delta = F.linear(self._silu_mul(F.linear(h, wgu), fast), w_down)
        h, _ = self._add_norm(x, delta, self.final_norm, fast)
        torch.mm(h, self.lm_head.t(), out=out)

    def _add_norm(self, x: torch.Tensor, delta: torch.Tensor | None, w: torch.Tensor, fast: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        if not fast:
            x = x if delta is None else x + delta
            return _rmsnorm_torch(x, w, self.eps), x
        n = x.shape[-1]
        out = torch.empty_like(x)
        res = torch.empty_like(x) if delta is not None else x
        _add_rmsnorm_kernel[(x.shape[0],)](x, delta if delta is not None else x, w, out, res, n, self.eps,
                                           HAS_D=delta is not None, BLOCK=triton.next_power_of_2(n))
        return out, res

    def _rope_write(self, qkv: torch.Tensor, kv: _KV, li: int, fast: bool) -> torch.Tensor:
        rows, h_, kvh, d = qkv.shape[0], self.n_heads, self.n_kv, self.head_dim
        if fast:
            q = torch.empty((rows, h_, d), dtype=qkv.dtype, device=qkv.device)
            _rope_cache_kernel[(rows,)](qkv, kv.cos, kv.sin, kv.pad, kv.t, q, kv.k[li], kv.v[li], kv.length, H=h_,
                                        KVH=kvh, D=d, NHP=triton.next_power_of_2(h_ + kvh),
                                        KVP=triton.next_power_of_2(kvh))
            return q
        qkv = qkv.view(rows, h_ + 2 * kvh, d)
        pos = kv.t - kv.pad
        cos, sin = kv.cos[pos][:, None].to(qkv.dtype), kv.sin[pos][:, None].to(qkv.dtype)
        q, kk, v = qkv[:, :h_], qkv[:, h_:h_ + kvh], qkv[:, h_ + kvh:]
        kv.k[li].index_copy_(1, kv.t, (kk * cos + _rotate_half(kk) * sin)[:, None])
        kv.v[li].index_copy_(1, kv.t, v[:, None])
        return q * cos + _rotate_half(q) * sin

    def _attend(self, q: torch.Tensor, kv: _KV, li: int, fast: bool) -> torch.Tensor:
        rows, h_, kvh, d = q.shape[0], self.n_heads, self.n_kv, self.head_dim
        if not fast:
            keys = kv.k[li][kv.anc, kv.ar_len].transpose(1, 2)  # (rows, kvh, T, d) gathered through the back-pointers
            vals = kv.v[li][kv.anc, kv.ar_len].transpose(1, 2)
            mask = ((kv.ar_len[None] >= kv.pad[:, None]) & (kv.ar_len[None] <= kv.t))[:, None, None]
            out = F.scaled_dot_product_attention(q[:, :, None], keys, vals, attn_mask=mask, scale=self.scale,
                                                 enable_gqa=kvh != h_)
            return out.reshape(rows, h_ * d)
        g = h_ // kvh
        gp = max(16, triton.next_power_of_2(g))
        prec = "ieee" if q.dtype == torch.float32 else "tf32"
        out = torch.empty((rows, h_, d), dtype=q.dtype, device=q.device)
        ns = kv.nsplit
        grid = (rows * kvh, ns)
        if ns == 1:
            _decode_attn_kernel[grid](q, kv.k[li], kv.v[li], kv.anc, kv.pad, kv.t, out, out, out, self.scale, kv.length,
                                      kv.split_len, KVH=kvh, G=g, GP=gp, D=d, BLOCK_N=_BLOCK_N, NSPLIT=1, PREC=prec)
        else:
            part = torch.empty((rows * kvh, ns, gp, d), dtype=torch.float32, device=q.device)
            mx = torch.empty((rows * kvh, ns, gp), dtype=torch.float32, device=q.device)
            ls = torch.empty_like(mx)
            _decode_attn_kernel[grid](q, kv.k[li], kv.v[li], kv.anc, kv.pad, kv.t, part, mx, ls, self.scale, kv.length,
                                      kv.split_len, KVH=kvh, G=g, GP=gp, D=d, BLOCK_N=_BLOCK_N, NSPLIT=ns, PREC=prec)
            _attn_combine_kernel[(rows * h_,)](part, mx, ls, out, G=g, GP=gp, D=d, NSPLIT=ns)
        return out.view(rows, h_ * d)

    @staticmethod
    def _silu_mul(gu: torch.Tensor, fast: bool) -> torch.Tensor:
        n = gu.shape[-1] // 2
        if not fast:
            g, u = gu.chunk(2, dim=-1)
            return F.silu(g) * u
        out = torch.empty((gu.shape[0], n), dtype=gu.dtype, device=gu.device)
        _silu_mul_kernel[(gu.shape[0], triton.cdiv(n, 1024))](gu, out, n, BLOCK=1024)
        return out


_TOKEN_STRINGS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()
_STOP_TABLES: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], torch.Tensor]] = weakref.WeakKeyDictionary()


def _token_strings(tokenizer: Any) -> list[str]:
    """The text each token id adds when decoded after other text (special tokens add nothing)."""
    cached = _TOKEN_STRINGS.get(tokenizer)
    if cached is not None:
        return cached
    n = len(tokenizer)
    anchor_ids = tokenizer.encode("a", add_special_tokens=False)[-1:]
    prefix = tokenizer.decode(anchor_ids, skip_special_tokens=True)
    texts = tokenizer.batch_decode([[*anchor_ids, t] for t in range(n)], skip_special_tokens=True)
    out = [s[len(prefix):] if s.startswith(prefix) else s for s in texts]
    _TOKEN_STRINGS[tokenizer] = out
    return out


def _stop_table(tokenizer: Any, stop: str, vocab: int) -> torch.Tensor:
    """KMP automaton of ``stop`` over token ids: ``table[q, tok]`` is the state after ``tok`` from state ``q``.

    State ``q < len(stop)``: the decoded text ends with ``stop[:q]`` (longest such); ``len(stop)``: the
    text contains ``stop`` (absorbing). Shape ``(len(stop) + 1, vocab)``, int16, on the CPU.
    """
    per_tok = _STOP_TABLES.setdefault(tokenizer, {})
    key = (stop, vocab)
    if key in per_tok:
        return per_tok[key]
    m = len(stop)
    strings = _token_strings(tokenizer)
    table = torch.zeros((m + 1, vocab), dtype=torch.int16)
    table[m] = m
    chars = set(stop)
    for tok in range(vocab):
        w = strings[tok] if tok < len(strings) else ""
        if w and not chars.intersection(w):
            continue  # state 0 from every live state
        for q in range(m):
            u = stop[:q] + w
            if stop in u:
                table[q, tok] = m
                continue
            for length in range(min(m - 1, len(u)), 0, -1):
                if u.endswith(stop[:length]):
                    table[q, tok] = length
                    break
    per_tok[key] = table
    return table


class _Search:
    """Beam bookkeeping on the device: every tensor is updated in place, so one step can be graph-captured."""

    def __init__(self, b: int, k: int, steps: int, vocab: int, n_eos: int, stop_states: tuple[int, int],
                 has_stop: bool, device: torch.device) -> None:
        keep = max(2, 1 + n_eos) * k * (2 if has_stop else 1)  # the reference engine's candidate count
        self.b, self.k, self.steps, self.vocab = b, k, steps, vocab
        self.keep = min(keep, k * vocab)
        self.n_eos, self.has_stop = n_eos, has_stop
        self.eos = torch.zeros(max(n_eos, 1), dtype=torch.long, device=device)
        n_stop, n_states = stop_states
        self.stop_table = torch.zeros((n_stop, n_states, vocab), dtype=torch.int16, device=device)
        self.stop_len = torch.zeros(n_stop, dtype=torch.int16, device=device)
        self.stop_base = torch.arange(n_stop, device=device) * (n_states * vocab)
        self.stop_state = torch.zeros((b * k, n_stop), dtype=torch.long, device=device)
        self.run_scores = torch.zeros((b, k), device=device)
        self.fin_scores = torch.zeros((b, k), device=device)
        self.fin_valid = torch.zeros((b, k), dtype=torch.bool, device=device)
        self.fin_flag = torch.zeros((b, k), dtype=torch.bool, device=device)
        self.fin_step = torch.zeros((b, k), dtype=torch.long, device=device)
        self.fin_parent = torch.zeros((b, k), dtype=torch.long, device=device)
        self.fin_tok = torch.zeros((b, k), dtype=torch.long, device=device)
        self.fin_lp = torch.zeros((b, k), device=device)
        self.improvable = torch.ones(b, dtype=torch.bool, device=device)
        self.tokens = torch.zeros(b * k, dtype=torch.long, device=device)
        self.parents = torch.zeros(b * k, dtype=torch.long, device=device)
        self.tok_hist = torch.zeros((steps, b * k), dtype=torch.long, device=device)
        self.par_hist = torch.zeros((steps, b * k), dtype=torch.long, device=device)
        self.lp_hist = torch.zeros((steps, b * k), device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.base = (torch.arange(b, device=device) * k)[:, None]
        self.top_mask = torch.arange(self.keep, device=device) < k

    def load(self, eos: Sequence[int], stops: list[torch.Tensor]) -> None:
        """Set this request's EOS ids and stop automata (same shapes as allocated) and reset the state."""
        if self.n_eos:
            self.eos.copy_(torch.tensor(sorted(eos), dtype=torch.long))
        if stops:
            self.stop_table.zero_()
            for i, tab in enumerate(stops):
                self.stop_table[i, : tab.shape[0]] = tab.to(self.stop_table.device)
                self.stop_len[i] = tab.shape[0] - 1
        self.reset()

    def reset(self) -> None:
        self.run_scores.fill_(_NEG)
        self.run_scores[:, 0] = 0.0
        self.fin_scores.fill_(_NEG)
        self.fin_valid.zero_()
        self.improvable.fill_(True)
        self.stop_state.zero_()
        self.step.zero_()

    def select(self, logits: torch.Tensor, fast: bool) -> None:
        """One beam step from next-token logits (rows, V): pick, finish, re-order; no host sync."""
        b, k, keep = self.b, self.k, self.keep
        rows, vocab = logits.shape
        c = min(keep, vocab)  # a row's best c are all that its prompt can use
        if fast and vocab > 4096:  # one pass over the logits: chunk top-c and logsumexp partials, then tiny top-k
            nch = triton.cdiv(vocab, 4096)
            pv = torch.empty((rows, nch * c), dtype=torch.float32, device=logits.device)
            pi = torch.empty((rows, nch * c), dtype=torch.int32, device=logits.device)
            pm = torch.empty((rows, nch), dtype=torch.float32, device=logits.device)
            ps = torch.empty_like(pm)
            _chunk_topk_kernel[(rows, nch)](logits, pv, pi, pm, ps, vocab, nch, C=c, BLOCK=4096, num_warps=8)
            mx = pm.max(1, keepdim=True).values
            lse = (mx + (ps * (pm - mx).exp()).sum(1, keepdim=True).log()).view(rows)
            vals, sel = torch.topk(pv, c, dim=-1)
            idx = pi.gather(1, sel).long()
        else:
            lse = torch.logsumexp(logits.float(), dim=-1)
            vals, idx = torch.topk(logits, c, dim=-1)
        lp_all = (vals.float() - lse[:, None]).view(b, -1)
        cand = lp_all + self.run_scores.view(b, k, 1).expand(b, k, vals.shape[1]).reshape(b, -1)
        top_scores, top_pos = torch.topk(cand, keep, dim=-1)
        parent = top_pos // vals.shape[1] + self.base
        tok = idx.view(b, -1).gather(1, top_pos)
        lp = lp_all.gather(1, top_pos)
        ended = torch.zeros_like(tok, dtype=torch.bool)
        if self.n_eos:
            ended |= (tok[..., None] == self.eos).any(-1)
        if self.has_stop:
            n_stop = self.stop_len.shape[0]
            st = self.stop_state.index_select(0, parent.view(-1))
            new_st = self.stop_table.view(-1)[self.stop_base + st * self.vocab + tok.view(-1, 1)].long()
            ended |= (new_st == self.stop_len.long()).any(-1).view(b, keep)
        hits = ended | (self.step == self.steps - 1)
        r_scores, r_sel = torch.topk(top_scores + hits.float() * _NEG, k, dim=-1)
        # finished pool: only the best k continuations of the step may join (transformers / reference rule)
        did = hits & self.top_mask
        f_c = top_scores + (~self.improvable[:, None]).float() * _NEG + (~did).float() * _NEG
        m_scores, m_sel = torch.topk(torch.cat([self.fin_scores, f_c], 1), k, dim=-1)

        def merge(old: torch.Tensor, new: torch.Tensor) -> None:
            old.copy_(torch.cat([old, new], 1).gather(1, m_sel))

        merge(self.fin_valid, did)
        merge(self.fin_flag, ended)
        merge(self.fin_step, self.step.expand(b, keep))
        merge(self.fin_parent, parent)
        merge(self.fin_tok, tok)
        merge(self.fin_lp, lp)
        self.fin_scores.copy_(m_scores)
        new_parent = parent.gather(1, r_sel).view(-1)
        new_tok = tok.gather(1, r_sel).view(-1)
        if self.has_stop:
            self.stop_state.copy_(new_st.view(b, keep, n_stop).gather(1, r_sel[..., None].expand(b, k, n_stop))
                                  .view(b * k, n_stop))
        self.run_scores.copy_(r_scores)
        self.tokens.copy_(new_tok)
        self.parents.copy_(new_parent)
        self.tok_hist.index_copy_(0, self.step, new_tok[None])
        self.par_hist.index_copy_(0, self.step, new_parent[None])
        self.lp_hist.index_copy_(0, self.step, lp.gather(1, r_sel).view(1, -1))
        worst = torch.where(self.fin_valid, self.fin_scores.min(1, keepdim=True).values, _NEG)
        self.improvable &= (r_scores[:, :1] > worst).any(1)
        self.step += 1

    def results(self, steps_done: int) -> list[list[Beam]]:
        """Backtrack the finished pool through the history tables (one device-to-host copy)."""
        b, k = self.b, self.k
        tok_h, par_h, lp_h = (x[:steps_done].cpu() for x in (self.tok_hist, self.par_hist, self.lp_hist))
        scores, step, parent, tok, lp, flag = (
            x.cpu() for x in (self.fin_scores, self.fin_step, self.fin_parent, self.fin_tok, self.fin_lp, self.fin_flag))
        n = b * k
        step, row = step.view(n), parent.view(n).clone()
        toks = torch.zeros((n, steps_done + 1), dtype=torch.long)
        lps = torch.zeros((n, steps_done + 1), dtype=torch.float32)
        toks[torch.arange(n), step] = tok.view(n)
        lps[torch.arange(n), step] = lp.view(n)
        for s in range(int(step.max()) - 1, -1, -1):
            live = step > s
            toks[live, s] = tok_h[s, row[live]]
            lps[live, s] = lp_h[s, row[live]]
            row[live] = par_h[s, row[live]]
        out: list[list[Beam]] = []
        valid = self.fin_valid.cpu()
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        for bi in range(b):
            beams = []
            for j in order[bi].tolist():
                e = bi * k + j
                if not valid[bi, j]:
                    continue  # every continuation finished before k could join (the reference returns fewer too)
                ln = int(step[e]) + 1
                beams.append(Beam(token_ids=toks[e, :ln].tolist(), token_logprobs=lps[e, :ln].tolist(),
                                  finished=bool(flag.view(n)[e])))
            out.append(beams)
        return out


class BeamInputError(ValidationError, ValueError):
    """Bad arguments to :func:`cuda_beam_search` (a 422 through the envelope, a ValueError to plain callers)."""


class _Session:
    """Buffers, search state and (on CUDA) the captured decoding step for one batch shape."""

    def __init__(self, dec: _CompactDecoder, key: tuple[Any, ...], device: torch.device, fast: bool) -> None:
        b, k, p, steps, vocab, n_eos, stop_states, has_stop = key
        self.key, self.dec, self.fast, self.device = key, dec, fast, device
        self.kv = _KV(dec, b * k, p + steps, device)
        self.search = _Search(b, k, steps, vocab, n_eos, stop_states, has_stop, device)
        self.logits = torch.zeros((b * k, vocab), dtype=dec.dtype, device=device)
        self.graph: Any = None

    def body(self) -> None:
        """Select from the current logits, re-point the cache, run the new tokens: the captured step."""
        self.search.select(self.logits, self.fast)
        self.kv.advance(self.search.parents)
        self.dec.decode(self.kv, self.search.tokens, self.fast, out=self.logits)
        self.kv.t += 1

    def run(self, ids: torch.Tensor, pad: torch.Tensor, eos: Sequence[int], stops: list[torch.Tensor]) -> list[list[Beam]]:
        search, kv, k = self.search, self.kv, self.search.k
        b, p = ids.shape
        logits0 = self.dec.prefill(kv, ids, pad, k).repeat_interleave(k, 0)
        kv.pad.copy_(pad.repeat_interleave(k))
        kv.anc0.zero_()
        kv.anc0[:, :p] = (torch.arange(b, device=ids.device) * k).repeat_interleave(k)[:, None]
        kv.t0 = p
        search.load(eos, stops)

        def reset() -> None:
            search.reset()
            kv.reset()
            self.logits.copy_(logits0)

        reset()
        if self.device.type == "cuda" and self.graph is None and search.steps > 1:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.body()
            self.graph = graph
            reset()
        return search.results(self._loop())

    def _loop(self) -> int:
        """Replay the step until ``max_new_tokens`` or until no prompt can improve; the steps run."""
        search, steps = self.search, self.search.steps
        pending: tuple[Any, torch.Tensor] | None = None
        done = 0
        for s in range(steps):
            if s == steps - 1:
                search.select(self.logits, self.fast)
            elif self.graph is not None:
                self.graph.replay()
            else:
                self.body()
            done = s + 1
            if done % _CHECK_EVERY or done == steps:
                continue
            if self.device.type != "cuda":
                if not bool(search.improvable.any()):
                    break
                continue
            if pending is not None:  # read the flag of one interval ago: the GPU still has a full queue
                pending[0].synchronize()
                if not bool(pending[1]):
                    break
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_(search.improvable.any(), non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            pending = (event, flag)
        return done


_DECODERS: weakref.WeakKeyDictionary[Any, _CompactDecoder] = weakref.WeakKeyDictionary()


_DECODERS_LOCK = threading.Lock()


def _decoder_for(model: Any) -> _CompactDecoder:
    with _DECODERS_LOCK:
        dec = _DECODERS.get(model)
        if dec is None:
            dec = _DECODERS[model] = _CompactDecoder(model)
        return dec


def _run_hf(model: Any, ids: torch.Tensor, pad: torch.Tensor, search: _Search, fast: bool) -> list[list[Beam]]:
    """Other architectures: the HF forward with its own cache, re-ordered in place, under the same selection."""
    b, p = ids.shape
    k = search.k
    mask = (torch.arange(p, device=ids.device)[None] >= pad[:, None]).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    rows = torch.arange(b, device=ids.device).repeat_interleave(k)
    logits, cache = out.logits[:, -1][rows], out.past_key_values
    cache.reorder_cache(rows)
    mask, nxt = mask[rows], pos[rows, -1:] + 1
    done = 0
    for s in range(search.steps):
        search.select(logits, fast)
        done = s + 1
        if done == search.steps or (done % _CHECK_EVERY == 0 and not bool(search.improvable.any())):
            break
        cache.reorder_cache(search.parents)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
        out = model(input_ids=search.tokens[:, None], attention_mask=mask, position_ids=nxt, past_key_values=cache,
                    use_cache=True)
        logits, nxt = out.logits[:, -1], nxt + 1
    return search.results(done)


def cuda_beam_search(
    model: Any,
    prompt_ids: list[list[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_token_ids: set[int],
    pad_token_id: int,
    stop: Sequence[str] = (),
    tokenizer: Any = None,
) -> list[list[Beam]]:
    """Top ``num_beams`` beams per prompt, best (sum of log-probs) first: ``beam_search`` for CUDA."""
    if num_beams < 1 or max_new_tokens < 1:
        raise BeamInputError("num_beams and max_new_tokens must be >= 1", param="num_beams")
    stops = [s for s in dict.fromkeys(stop) if s]
    if stops and tokenizer is None:
        raise BeamInputError("stop strings need a tokenizer", param="stop")
    if not prompt_ids:
        return []
    if any(not p for p in prompt_ids):
        raise BeamInputError("every prompt needs at least one token", param="prompts")
    if any(len(s) > 64 for s in stops):  # the automaton table grows with the string: leave it to the reference
        from services.generator.beam import beam_search

        return beam_search(model, prompt_ids, num_beams=num_beams, max_new_tokens=max_new_tokens,
                           eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, stop=stop, tokenizer=tokenizer)
    device = next(model.parameters()).device
    fast = _HAS_TRITON and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
    compact = _CompactDecoder.supports(model)
    b, k = len(prompt_ids), num_beams
    width = max(len(p) for p in prompt_ids)
    if compact:
        width = -(-width // 16) * 16  # a few shapes only, so captured graphs get reused
    ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
    ids = ids.to(device)
    pad = torch.tensor([width - len(p) for p in prompt_ids], dtype=torch.long, device=device)
    out_emb = model.get_output_embeddings()
    vocab = int(out_emb.weight.shape[0]) if out_emb is not None else int(model.config.vocab_size)
    tables = [_stop_table(tokenizer, s, vocab) for s in stops]
    stop_states = (len(tables), max((t.shape[0] for t in tables), default=1))
    eos = sorted(int(e) for e in eos_token_ids)
    with torch.inference_mode():
        if not compact:
            search = _Search(b, k, max_new_tokens, vocab, len(eos), stop_states, bool(stops), device)
            search.load(eos, tables)
            return _run_hf(model, ids, pad, search, fast)
        dec = _decoder_for(model)
        key = (b, k, width, max_new_tokens, vocab, len(eos), stop_states, bool(stops))
        with dec.lock:
            dec.refresh(model)
            if dec.session is None or dec.session.key != key or dec.session.fast != fast:
                dec.session = None  # free the old cache before allocating the new one
                dec.session = _Session(dec, key, device, fast)
            return dec.session.run(ids, pad, eos, tables)
