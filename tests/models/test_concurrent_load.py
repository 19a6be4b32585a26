"""Models loaded by several threads at once come out whole: transformers patches process-wide functions
while it builds a model (weight tying, init), so loads in one process are serialised (``BUILD_LOCK``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tied")
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1, "a": 2, "b": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=1, bos_token_id=1, pad_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_threads_loading_at_once_get_whole_models(tied_model: Path) -> None:
    from services.models import load_folder

    loaded, errors = [], []

    def load() -> None:
        try:
            for _ in range(3):
                loaded.append(load_folder(tied_model, device="cpu", dtype=None, name="tied"))
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(loaded) == 18
    for m in loaded:
        head, emb = m.model.get_output_embeddings().weight, m.model.get_input_embeddings().weight
        assert head.device.type == "cpu" and head.data_ptr() == emb.data_ptr()  # tied, never left on meta
