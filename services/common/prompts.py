"""The prompt layout: the token ids a model is conditioned on and trained on, defined once.

The generator conditions on :func:`encode_prompt` and returns the kept ``token_ids`` of a program; the
buffer stores P(t) of exactly those tokens; the trainer fine-tunes on :func:`encode_example`'s ids.
Both sides use this module, so a change to the layout changes both (``tests/generator/
test_prompt_identity.py`` checks that the trainer's ids for a generated program start with the
generator's ``prompt_token_ids + token_ids``).

Formats (``prompt_format`` of a generate request or a training job):

- ``raw`` (HumanEval/MBPP style): the prompt (signature + docstring) is tokenized as is, with the
  tokenizer's special tokens (e.g. a BOS), and the model continues it. The program is the continuation
  up to the first stop sequence (:data:`RAW_STOP` unless a request names its own).
- ``chat`` (instruct models): the prompt becomes the user message of the model's chat template, the
  generation prompt is added, and the assistant turn is *pre-filled* with an opening fence
  :data:`CHAT_FENCE_OPEN`, so beam search spends its k beams on k programs rather than on k ways to
  say "Here is the code". The closing fence is always a stop sequence (plus :data:`CHAT_STOP` unless a
  request names its own). The fence is in the prompt ids, so P(program) is P(program | prompt, fence).
- ``auto``: ``chat`` for instruct models with a chat template, else ``raw``.

Training target: the program's ids, then (chat) the closing fence, then EOS: what ends a program is
learnt too. Nothing here imports a tokenizer library: the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHAT_FENCE_OPEN = "```python\n"
CHAT_FENCE_CLOSE = "```"

RAW_STOP: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\nassert ", "\n```")
"""Stops for raw completion: the Codex paper's set (a new top-level statement ends the function being
completed) plus ``"\\nassert "`` and a closing code fence. The generator's default and the runs' alike."""

CHAT_STOP: tuple[str, ...] = ("\nif __name__", "\nprint(", "\nassert ")
"""Stops for chat prompts besides the closing fence, which always applies: top-level test code that
instruct models like to append after the function."""


def resolve_format(requested: str, *, instruct: bool, tokenizer: Any) -> str:
    """``raw`` or ``chat`` for a requested ``prompt_format`` (``auto``: chat for instruct models with a template)."""
    if requested in ("raw", "chat"):
        return requested
    return "chat" if instruct and getattr(tokenizer, "chat_template", None) else "raw"


def default_stops(fmt: str) -> list[str]:
    """The stop sequences of a format when a request names none (the chat fence is added by :func:`stop_sequences`)."""
    return list(RAW_STOP if fmt == "raw" else CHAT_STOP)


def stop_sequences(
    fmt: str, requested: Sequence[str], *, raw_default: Sequence[str] = RAW_STOP,
    chat_default: Sequence[str] = CHAT_STOP,
) -> list[str]:
    """Stop sequences in effect: the request's, else the format's defaults; chat always adds the fence."""
    stops = list(requested) if requested else list(raw_default if fmt == "raw" else chat_default)
    if fmt == "chat" and CHAT_FENCE_CLOSE not in stops:
        stops.insert(0, CHAT_FENCE_CLOSE)
    return stops


def encode_prompt(tokenizer: Any, prompt: str, fmt: str) -> list[int]:
    """Token ids the model is conditioned on for one prompt in format ``raw`` or ``chat``."""
    if fmt == "chat":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(text + CHAT_FENCE_OPEN, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_program(tokenizer: Any, program: str, fmt: str) -> list[int]:
    """The training target of a program: its ids, the closing fence (chat), then EOS."""
    if fmt == "chat":
        body = program if program.endswith("\n") else program + "\n"
        ids = list(tokenizer(body + CHAT_FENCE_CLOSE, add_special_tokens=False)["input_ids"])
    else:
        ids = list(tokenizer(program, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def encode_example(tokenizer: Any, prompt: str, program: str, fmt: str) -> tuple[list[int], list[int]]:
    """(prompt ids, program target ids) of one training example, laid out as the generator conditions."""
    prompt_ids = encode_prompt(tokenizer, prompt, fmt)
    if not prompt_ids:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        prompt_ids = [bos] if bos is not None else []
    return prompt_ids, encode_program(tokenizer, program, fmt)


def encode_messages(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of a whole chat (OpenAI ``messages``) under the model's template, generation prompt added.

    Unlike ``chat`` this pre-fills nothing: the answer is the model's own, as an OpenAI-compatible
    ``/v1/chat/completions`` client expects.
    """
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
