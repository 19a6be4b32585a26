"""Reference beam search in PyTorch (any device): the paper's sampling phase, with exact log-probabilities.

Semantics are those of ``transformers``' ``generate(num_beams=k, num_return_sequences=k, do_sample=False,
length_penalty=0)`` (its default ``early_stopping=False``):

- a beam's score is the sum of its tokens' log-probabilities (``log_softmax`` of the logits in fp32, no
  temperature, no length penalty);
- each step takes the best ``max(2, 1 + n_eos) * k`` continuations over all running beams; a continuation
  that ends on EOS (or whose decoded text contains a stop string) is *finished* and joins the finished
  pool only if it ranks among the best ``k`` continuations of that step; the best ``k`` unfinished ones
  keep running;
- a prompt is done when its pool holds ``k`` finished beams and the worst of them scores at least as
  well as the best running beam (scores only fall, so nothing could overtake it), or at
  ``max_new_tokens``, where the best ``k`` continuations of the last step join the pool unfinished.

Prompts are decoded together, left-padded, with a KV cache that is re-ordered per step; a prompt that
is done leaves the batch. ``services.generator.cuda`` offers the same function for CUDA.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

NEG_INF = float("-inf")


@dataclass
class Beam:
    """One hypothesis: generated ids (prompt excluded) and their log-probabilities."""

    token_ids: list[int]  # generated ids (prompt excluded), EOS included if it ended on EOS
    token_logprobs: list[float]  # log P(token | prefix) under the model (log_softmax, no temperature)
    finished: bool  # ended by EOS or a stop string (False = hit max_new_tokens)
    _score: float | None = field(default=None, repr=False, compare=False)

    @property
    def score(self) -> float:
        """Sum of the token log-probabilities (the beam search's ranking key)."""
        return self._score if self._score is not None else math.fsum(self.token_logprobs)


def left_pad(prompt_ids: list[list[int]], pad_token_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of prompts."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def model_device(model: Any) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


def cache_kwarg(model: Any) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older): the forward's KV-cache argument."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version gives it."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def prefill(model: Any, prompt_ids: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """Run the prompts: last-position log-probs (fp32), the cache, the mask and the next positions."""
    device = model_device(model)
    ids, mask = left_pad(prompt_ids, pad_token_id, device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    return logprobs, cache_of(out), mask, pos[:, -1] + 1


def step(model: Any, tokens: torch.Tensor, cache: Any, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """One decoding step for every row; returns fp32 log-probs of the next token."""
    out = model(
        input_ids=tokens.view(-1, 1), attention_mask=mask, position_ids=pos.view(-1, 1),
        use_cache=True, **{cache_kwarg(model): cache},
    )
    return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


def hits_stop(tokenizer: Any, ids: list[int], stop: Sequence[str]) -> bool:
    """Whether the decoded generated ids contain any stop string."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return any(s in text for s in stop)


@dataclass
class _Running:
    ids: list[int]
    lps: list[float]


def beam_search(
    model: Any,
    prompt_ids: list[list[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_token_ids: set[int],
    pad_token_id: int,
    stop: Sequence[str] = (),
    tokenizer: Any = None,
    on_token: Callable[[int, int, int, float], None] | None = None,
) -> list[list[Beam]]:
    """Top ``num_beams`` beams per prompt, best (sum of log-probs) first.

    ``on_token(prompt index, 0, token id, log-prob)`` hears each token of greedy decoding (``num_beams``
    1, where the one beam only grows) as it is chosen; wider beams are final only at the end."""
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError("num_beams and max_new_tokens must be >= 1")
    if on_token is not None and num_beams != 1:
        raise ValueError("on_token needs num_beams 1: a wider beam's prefix is not final until the search ends")
    if stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer")
    if not prompt_ids:
        return []
    if any(not p for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    k = num_beams
    with torch.inference_mode():
        logprobs, cache, mask, pos = prefill(model, prompt_ids, pad_token_id)
        vocab = logprobs.shape[-1]
        keep = max(2, 1 + len(eos_token_ids)) * k
        if stop:
            keep *= 2  # stop strings may finish many continuations; look further for k running ones
        keep = min(keep, k * vocab)
        device = logprobs.device
        n = len(prompt_ids)
        rows = torch.arange(n, device=device).repeat_interleave(k)
        cache.reorder_cache(rows)
        logprobs, mask, pos = logprobs[rows], mask[rows], pos[rows]
        scores = torch.full((n, k), NEG_INF, device=device)
        scores[:, 0] = 0.0
        running: list[list[_Running]] = [[_Running([], [])] + [_Running([], []) for _ in range(k - 1)] for _ in range(n)]
        finished: list[list[tuple[float, Beam]]] = [[] for _ in range(n)]
        active = list(range(n))  # prompt index of each group of k rows, in row order
        eos = set(eos_token_ids)
        for t in range(max_new_tokens):
            last = t == max_new_tokens - 1
            a = len(active)
            lp3 = logprobs.view(a, k, vocab)
            cand = (lp3 + scores.view(a, k, 1)).view(a, k * vocab)
            top_scores, top_idx = torch.topk(cand, keep, dim=-1)
            top_lp = lp3.view(a, k * vocab).gather(1, top_idx)
            top_scores_l, top_idx_l, top_lp_l = top_scores.tolist(), top_idx.tolist(), top_lp.tolist()
            next_active: list[int] = []
            parent_rows: list[int] = []
            next_tokens: list[int] = []
            next_scores: list[float] = []
            for g, b in enumerate(active):
                fresh: list[tuple[float, int, _Running]] = []
                for r in range(keep):
                    sc = top_scores_l[g][r]
                    if sc == NEG_INF:
                        break
                    slot, tok = divmod(top_idx_l[g][r], vocab)
                    if on_token is not None and r == 0:  # k = 1: the best continuation extends the one beam
                        on_token(b, 0, tok, top_lp_l[g][r])
                    parent = running[b][slot]
                    ids = [*parent.ids, tok]
                    lps = [*parent.lps, top_lp_l[g][r]]
                    done = tok in eos or (bool(stop) and hits_stop(tokenizer, ids, stop))
                    if done or last:
                        if r < k:
                            finished[b].append((sc, Beam(ids, lps, done, _score=sc)))
                    elif len(fresh) < k:
                        fresh.append((sc, g * k + slot, _Running(ids, lps)))
                    if len(fresh) == k and r >= k - 1:
                        break
                finished[b].sort(key=lambda x: -x[0])
                del finished[b][k:]
                pool = finished[b]
                if last or not fresh or (len(pool) == k and pool[-1][0] >= fresh[0][0]):
                    continue
                next_active.append(b)
                running[b] = [f[2] for f in fresh] + [_Running([], []) for _ in range(k - len(fresh))]
                for i in range(k):
                    if i < len(fresh):
                        next_scores.append(fresh[i][0])
                        parent_rows.append(fresh[i][1])
                        next_tokens.append(fresh[i][2].ids[-1])
                    else:  # fewer than k live continuations: a dead slot that never wins
                        next_scores.append(NEG_INF)
                        parent_rows.append(g * k)
                        next_tokens.append(pad_token_id)
            if not next_active:
                break
            sel = torch.tensor(parent_rows, device=device)
            cache.reorder_cache(sel)
            mask = torch.cat([mask[sel], torch.ones((len(parent_rows), 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos[sel]
            scores = torch.tensor(next_scores, device=device).view(len(next_active), k)
            active = next_active
            logprobs = step(model, torch.tensor(next_tokens, device=device), cache, mask, pos)
            pos = pos + 1
    return [[beam for _, beam in finished[b][:k]] for b in range(n)]
