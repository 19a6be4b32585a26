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
from typing import Any

import torch

from services.common.errors import ValidationError
from services.generator.beam import Beam

from . import kernels as K
from .decoder import _KV, _CompactDecoder
from .kernels import _HAS_TRITON
from .stops import _stop_table

_NEG = -1.0e9  # transformers' "never chosen" offset (finite, so sums stay ordered)
_CHECK_EVERY = 8


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
            nch = K.triton.cdiv(vocab, 4096)
            pv = torch.empty((rows, nch * c), dtype=torch.float32, device=logits.device)
            pi = torch.empty((rows, nch * c), dtype=torch.int32, device=logits.device)
            pm = torch.empty((rows, nch), dtype=torch.float32, device=logits.device)
            ps = torch.empty_like(pm)
            K._chunk_topk_kernel[(rows, nch)](logits, pv, pi, pm, ps, vocab, nch, C=c, BLOCK=4096, num_warps=8)
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
