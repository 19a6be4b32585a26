"""Triton kernels of the CUDA beam search (:mod:`services.generator.cuda.search`): fused residual-add +
RMSNorm, rotary + KV-cache write, split decode attention through the beams' back-pointers and its
combine step, SiLU x up, and a chunked top-k. Defined only when Triton imports; callers fall back to
torch ops otherwise (``_HAS_TRITON``).
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl

    _HAS_TRITON = True
except ImportError:  # pragma: no cover - CPU-only installs
    _HAS_TRITON = False

_BLOCK_N = 64  # keys per attention block

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


