"""Stop strings as automata over token ids: "the decoded text contains the stop string" becomes one
gather per step on the GPU (KMP states x vocabulary, built once per tokenizer and string)."""

from __future__ import annotations

import weakref
from typing import Any

import torch

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


