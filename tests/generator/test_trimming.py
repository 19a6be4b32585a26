"""Prompt formats and trimming with the real SmolLM2 tokenizer: text, ids and log-probs stay aligned."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.prompts import (
    CHAT_FENCE_CLOSE,
    CHAT_FENCE_OPEN,
    encode_prompt,
    resolve_format,
    stop_sequences,
)
from services.generator.trimming import trim

EOS = {0, 2}


def ids_of(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_trim_at_stop_keeps_text_ids_and_logprobs_aligned(smol_tokenizer: Any) -> None:
    body = "    return a + b\n"
    ids = ids_of(smol_tokenizer, body + "\ndef other():\n    pass\n")
    lps = [-0.1 * (i + 1) for i in range(len(ids))]
    t = trim(smol_tokenizer, ids, lps, finished=True, eos_token_ids=EOS, stop=["\ndef "])
    assert t.finish_reason == "stop"
    assert t.text == smol_tokenizer.decode(t.token_ids)
    assert "\ndef " not in t.text
    assert body.startswith(t.text) and t.text.startswith("    return a + b")
    assert t.token_ids == ids[: len(t.token_ids)]
    assert t.token_logprobs == lps[: len(t.token_ids)]


def test_trim_drops_a_token_that_straddles_the_cut(smol_tokenizer: Any) -> None:
    ids = ids_of(smol_tokenizer, "x = 1\n\n\nclass A:\n")
    t = trim(smol_tokenizer, ids, [-1.0] * len(ids), finished=True, eos_token_ids=EOS, stop=["\nclass "])
    full = smol_tokenizer.decode(ids)
    assert len(t.text) <= full.index("\nclass ")
    assert t.text == smol_tokenizer.decode(t.token_ids)
    assert t.text.startswith("x = 1")


def test_trim_at_eos_and_length(smol_tokenizer: Any) -> None:
    ids = [*ids_of(smol_tokenizer, "    return 1"), 2, *ids_of(smol_tokenizer, "junk")]
    t = trim(smol_tokenizer, ids, [-0.5] * len(ids), finished=True, eos_token_ids=EOS, stop=[])
    assert t.text == "    return 1" and t.finish_reason == "stop" and 2 not in t.token_ids
    ids = ids_of(smol_tokenizer, "    return 1")
    t = trim(smol_tokenizer, ids, [-0.5] * len(ids), finished=False, eos_token_ids=EOS, stop=["\ndef "])
    assert t.finish_reason == "length" and t.token_ids == ids


def test_trim_with_non_ascii_text(smol_tokenizer: Any) -> None:
    ids = ids_of(smol_tokenizer, "s = 'héllo wörld ✓'\n# done")
    t = trim(smol_tokenizer, ids, [-0.2] * len(ids), finished=True, eos_token_ids=EOS, stop=["\n#"])
    assert t.text == "s = 'héllo wörld ✓'" or "s = 'héllo wörld ✓'".startswith(t.text)
    assert t.text == smol_tokenizer.decode(t.token_ids)


def test_chat_prompt_ends_in_an_open_fence(smol_tokenizer: Any) -> None:
    ids = encode_prompt(smol_tokenizer, "Write add(a, b).", "chat")
    text = smol_tokenizer.decode(ids)
    assert "<|im_start|>user" in text and "Write add(a, b)." in text
    assert text.endswith("<|im_start|>assistant\n" + CHAT_FENCE_OPEN)
    raw = encode_prompt(smol_tokenizer, "def f():\n", "raw")
    assert smol_tokenizer.decode(raw) == "def f():\n"


def test_format_and_stop_resolution(smol_tokenizer: Any) -> None:
    assert resolve_format("auto", instruct=True, tokenizer=smol_tokenizer) == "chat"
    assert resolve_format("auto", instruct=False, tokenizer=smol_tokenizer) == "raw"
    assert resolve_format("raw", instruct=True, tokenizer=smol_tokenizer) == "raw"
    assert stop_sequences("raw", [], raw_default=["\ndef "], chat_default=["\nprint("]) == ["\ndef "]
    assert stop_sequences("chat", [], raw_default=["\ndef "], chat_default=["\nprint("]) == [CHAT_FENCE_CLOSE, "\nprint("]
    assert stop_sequences("chat", ["X"], raw_default=[], chat_default=[]) == [CHAT_FENCE_CLOSE, "X"]
    assert stop_sequences("raw", ["X"], raw_default=["\ndef "], chat_default=[]) == ["X"]


@pytest.mark.parametrize("text", ["", "abc", "def f(x):\n    return x\n"])
def test_trim_without_stop_is_identity(smol_tokenizer: Any, text: str) -> None:
    ids = ids_of(smol_tokenizer, text)
    t = trim(smol_tokenizer, ids, [-0.1] * len(ids), finished=False, eos_token_ids=EOS, stop=["\ndef "])
    assert t.token_ids == ids and t.text == text
