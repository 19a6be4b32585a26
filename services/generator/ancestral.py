"""Ancestral sampling (``mode="sample"``) with temperature and nucleus (top-p), reproducible per seed.

Temperature and top-p shape only the distribution a token is *drawn* from; the recorded
log-probability of each token is always ``log_softmax`` of the raw logits, so a sampled program's
``logprob`` means the same as a beam's: its probability under the served weights. Every returned
sequence draws from its own ``torch.Generator`` seeded from (seed, prompt index, sequence index), so
results do not depend on what else shares the batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .beam import Beam, hits_stop, prefill, step


def _filtered(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return probs


def sample(
    model: Any,
    prompt_ids: list[list[int]],
    *,
    num_return_sequences: int,
    max_new_tokens: int,
    eos_token_ids: set[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,  # one per prompt
    stop: Sequence[str] = (),
    tokenizer: Any = None,
    on_token: Callable[[int, int, int, float], None] | None = None,
) -> list[list[Beam]]:
    """``num_return_sequences`` samples per prompt, ordered best (sum of log-probs) first.

    ``on_token(prompt index, sequence index, token id, log-prob)`` hears every token as it is drawn
    (sequence index = draw order, before the final ordering)."""
    if stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer")
    if not prompt_ids:
        return []
    n, r = len(prompt_ids), num_return_sequences
    base = list(seeds) if seeds is not None else [random.randrange(2**32) for _ in range(n)]
    with torch.inference_mode():
        logprobs, cache, mask, pos = prefill(model, prompt_ids, pad_token_id)
        device = logprobs.device
        rows = torch.arange(n, device=device).repeat_interleave(r)
        cache.reorder_cache(rows)
        logp, mask, pos = logprobs[rows], mask[rows], pos[rows]
        gens = []
        for i in range(n * r):
            g = torch.Generator(device=device)
            g.manual_seed((base[i // r] * 1_000_003 + (i % r)) % (2**63))
            gens.append(g)
        seqs: list[Beam] = [Beam([], [], False) for _ in range(n * r)]
        live = list(range(n * r))  # sequence index of each row
        for t in range(max_new_tokens):
            probs = _filtered(logp, temperature, top_p)
            picks = [int(torch.multinomial(probs[j], 1, generator=gens[s]).item()) for j, s in enumerate(live)]
            chosen = torch.tensor(picks, device=device)
            lp = logp.gather(1, chosen.view(-1, 1)).view(-1).tolist()
            keep_rows: list[int] = []
            for j, s in enumerate(live):
                beam = seqs[s]
                beam.token_ids.append(picks[j])
                beam.token_logprobs.append(lp[j])
                if on_token is not None:
                    on_token(s // r, s % r, picks[j], lp[j])
                if picks[j] in eos_token_ids or (stop and hits_stop(tokenizer, beam.token_ids, stop)):
                    beam.finished = True
                else:
                    keep_rows.append(j)
            if not keep_rows or t == max_new_tokens - 1:
                break
            sel = torch.tensor(keep_rows, device=device)
            cache.reorder_cache(sel)
            mask = torch.cat([mask[sel], torch.ones((len(keep_rows), 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos[sel]
            live = [live[j] for j in keep_rows]
            logp = step(model, chosen[sel], cache, mask, pos)
            pos = pos + 1
    out: list[list[Beam]] = []
    for i in range(n):
        group = seqs[i * r:(i + 1) * r]
        out.append(sorted(group, key=lambda b: -b.score))
    return out
