"""Trimming a generated sequence: EOS and stop sequences cut, ids, log-probabilities and text kept aligned.

The prompt layout and stop defaults are :mod:`services.common.prompts` (shared with the trainer).

Trimming maps text back to tokens, so that ``text``, ``token_ids`` and ``logprob`` always agree:
generation is cut at the first EOS (excluded); then the generated ids are decoded, the earliest
occurrence of any stop sequence is found at character ``c``, and the kept ids are the longest
prefix ``ids[:j]`` whose decoding is a prefix of the full text and ends at or before ``c``. A token
that straddles the cut (e.g. ``"\\n\\n"`` before ``"def "``) is dropped with the stop, so ``text`` may
be a few characters (typically a newline) shorter than a character-level cut, and never contains the
stop. ``text = decode(token_ids)`` and ``logprob = sum`` of exactly those tokens' log-probabilities.
EOS and stop tokens are not part of the program and are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Trimmed:
    """A candidate after EOS/stop trimming."""

    token_ids: list[int]
    token_logprobs: list[float]
    text: str
    finish_reason: str  # "stop" | "length"


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


def trim(
    tokenizer: Any,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    *,
    finished: bool,
    eos_token_ids: set[int],
    stop: Sequence[str],
) -> Trimmed:
    """Cut a generated sequence at EOS / the first stop sequence, keeping ids, log-probs and text aligned."""
    ids = list(token_ids)
    lps = list(token_logprobs)
    reason = "stop" if finished else "length"
    for i, t in enumerate(ids):
        if t in eos_token_ids:
            ids, lps, reason = ids[:i], lps[:i], "stop"
            break
    full = _decode(tokenizer, ids)
    cut = min((pos for pos in (full.find(s) for s in stop) if pos >= 0), default=-1)
    if cut < 0:
        return Trimmed(ids, lps, full, reason)
    # Largest j with len(decode(ids[:j])) <= cut: binary search (prefix lengths grow with j), then step
    # back until the decoded prefix is a true prefix of the full text (multi-byte characters split
    # across tokens decode to replacement characters on their own).
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_decode(tokenizer, ids[:mid])) <= cut:
            lo = mid
        else:
            hi = mid - 1
    j = lo
    text = _decode(tokenizer, ids[:j])
    while j > 0 and not (full.startswith(text) and len(text) <= cut):
        j -= 1
        text = _decode(tokenizer, ids[:j])
    return Trimmed(ids[:j], lps[:j], text, "stop")
