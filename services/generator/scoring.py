"""Teacher-forced scoring: log P of given tokens and the most likely alternatives, one forward pass.

Used by the OpenAI-compatible routes for what decoding does not record: the prompt's own
log-probabilities (``echo``) and the ``top_logprobs`` alternatives at each generated position. The
log-probabilities of the generated tokens themselves come from decoding (so they sum to the native
``logprob`` exactly); this pass only adds the rest.
"""

from __future__ import annotations

from typing import Any

import torch

from .beam import model_device


def score_tokens(model: Any, ids: list[int], *, start: int, top: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """For each position i in [max(1, start), len(ids)): (log P(ids[i] | ids[:i]), top-``top`` (id, logprob))."""
    first = max(1, start)
    if len(ids) <= first:
        return []
    with torch.inference_mode():
        x = torch.tensor([ids], dtype=torch.long, device=model_device(model))
        logits = model(input_ids=x).logits[0, first - 1:len(ids) - 1].float()
        lp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(ids[first:], dtype=torch.long, device=lp.device)
        chosen = lp.gather(1, target.view(-1, 1)).view(-1).tolist()
        if top > 0:
            values, indices = torch.topk(lp, k=min(top, lp.shape[-1]), dim=-1)
            alts = [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
        else:
            alts = [[] for _ in chosen]
    return [(float(c), [(int(t), float(v)) for t, v in a]) for c, a in zip(chosen, alts, strict=True)]
