"""The compact decoder of the CUDA beam search: Llama / Qwen2 forward over the HF model's weights with a
static KV cache shared by the beams through back-pointers (``_KV``), Triton kernels when present.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from . import kernels as K
from .kernels import _BLOCK_N

if TYPE_CHECKING:
    from .search import _Session

_ARCHS = ("llama", "qwen2")


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
        K._add_rmsnorm_kernel[(x.shape[0],)](x, delta if delta is not None else x, w, out, res, n, self.eps,
                                           HAS_D=delta is not None, BLOCK=K.triton.next_power_of_2(n))
        return out, res

    def _rope_write(self, qkv: torch.Tensor, kv: _KV, li: int, fast: bool) -> torch.Tensor:
        rows, h_, kvh, d = qkv.shape[0], self.n_heads, self.n_kv, self.head_dim
        if fast:
            q = torch.empty((rows, h_, d), dtype=qkv.dtype, device=qkv.device)
            K._rope_cache_kernel[(rows,)](qkv, kv.cos, kv.sin, kv.pad, kv.t, q, kv.k[li], kv.v[li], kv.length, H=h_,
                                        KVH=kvh, D=d, NHP=K.triton.next_power_of_2(h_ + kvh),
                                        KVP=K.triton.next_power_of_2(kvh))
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
        gp = max(16, K.triton.next_power_of_2(g))
        prec = "ieee" if q.dtype == torch.float32 else "tf32"
        out = torch.empty((rows, h_, d), dtype=q.dtype, device=q.device)
        ns = kv.nsplit
        grid = (rows * kvh, ns)
        if ns == 1:
            K._decode_attn_kernel[grid](q, kv.k[li], kv.v[li], kv.anc, kv.pad, kv.t, out, out, out, self.scale, kv.length,
                                      kv.split_len, KVH=kvh, G=g, GP=gp, D=d, BLOCK_N=_BLOCK_N, NSPLIT=1, PREC=prec)
        else:
            part = torch.empty((rows * kvh, ns, gp, d), dtype=torch.float32, device=q.device)
            mx = torch.empty((rows * kvh, ns, gp), dtype=torch.float32, device=q.device)
            ls = torch.empty_like(mx)
            K._decode_attn_kernel[grid](q, kv.k[li], kv.v[li], kv.anc, kv.pad, kv.t, part, mx, ls, self.scale, kv.length,
                                      kv.split_len, KVH=kvh, G=g, GP=gp, D=d, BLOCK_N=_BLOCK_N, NSPLIT=ns, PREC=prec)
            K._attn_combine_kernel[(rows * h_,)](part, mx, ls, out, G=g, GP=gp, D=d, NSPLIT=ns)
        return out.view(rows, h_ * d)

    @staticmethod
    def _silu_mul(gu: torch.Tensor, fast: bool) -> torch.Tensor:
        n = gu.shape[-1] // 2
        if not fast:
            g, u = gu.chunk(2, dim=-1)
            return F.silu(g) * u
        out = torch.empty((gu.shape[0], n), dtype=gu.dtype, device=gu.device)
        K._silu_mul_kernel[(gu.shape[0], K.triton.cdiv(n, 1024))](gu, out, n, BLOCK=1024)
        return out


