"""Prompt formats and program extraction: what the model is conditioned on, and what comes back.

Two formats (``GenerateRequest.prompt_format``):

- ``raw`` (HumanEval/MBPP style): the prompt (signature + docstring) is tokenized as is (with the
  tokenizer's special tokens, e.g. a BOS) and the model continues it. The program is the continuation
  up to the first stop sequence; without ``stop`` in the request the defaults are the Codex paper's
  (``"\\ndef "``, ``"\\nclass "``, ``"\\nif "``, ``"\\nprint("``, ``"\\n#"``) plus ``"\\nassert "`` and
  ``"\\n```"``: a new top-level statement ends the function being completed.
- ``chat`` (instruct models): the prompt becomes the user message of the model's chat template, the
  generation prompt is added, and the assistant turn is *pre-filled* with an opening fence
  ``"```python\\n"``. The model therefore writes code right away, and beam search spends its k beams
  on k programs rather than on k ways to say "Here is the code". The closing fence ``"```"`` is always
  a stop sequence (plus ``"\\nif __name__"``, ``"\\nprint("``, ``"\\nassert "`` unless the request
  names its own). The fence is in ``prompt_token_ids``, so the program's probability is
  P(program | prompt, fence), still exactly the returned tokens.
- ``auto``: ``chat`` for instruct models with a chat template, else ``raw``.

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

CHAT_FENCE_OPEN = "```python\n"
CHAT_FENCE_CLOSE = "```"


@dataclass
class Trimmed:
    """A candidate after EOS/stop trimming."""

    token_ids: list[int]
    token_logprobs: list[float]
    text: str
    finish_reason: str  # "stop" | "length"


def resolve_format(requested: str, *, instruct: bool, tokenizer: Any) -> str:
    """``raw`` or ``chat`` for a request's ``prompt_format``."""
    if requested in ("raw", "chat"):
        return requested
    return "chat" if instruct and getattr(tokenizer, "chat_template", None) else "raw"


def encode_prompt(tokenizer: Any, prompt: str, fmt: str) -> list[int]:
    """Token ids the model is conditioned on for one prompt in format ``raw`` or ``chat``."""
    if fmt == "chat":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(text + CHAT_FENCE_OPEN, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def stop_sequences(fmt: str, requested: Sequence[str], *, raw_default: Sequence[str],
                   chat_default: Sequence[str]) -> list[str]:
    """Stop sequences in effect: the request's, else the format's defaults; chat always adds the fence."""
    stops = list(requested) if requested else list(raw_default if fmt == "raw" else chat_default)
    if fmt == "chat" and CHAT_FENCE_CLOSE not in stops:
        stops.insert(0, CHAT_FENCE_CLOSE)
    return stops


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
