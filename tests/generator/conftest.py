"""Fixtures: the real SmolLM2 tokenizer/weights (converted once into a persistent cache) and tiny random
Llama models built from a config that share its tokenizer, so API tests are fast on the CPU."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from services.generator.settings import Settings
from services.models import MARKER, prepare_model

torch.set_num_threads(1)  # a shared 2-core machine: more threads only contend


def persistent_cache() -> Path:
    """Converted models survive test sessions here (BTP_DATA_DIR, default ~/.cache/btp)."""
    return Path(os.environ.get("BTP_DATA_DIR") or Path.home() / ".cache" / "btp") / "models"


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """The real SmolLM2-135M-Instruct as an HF folder (converted from its GGUF once, then cached)."""
    return prepare_model("SmolLM2-135M-Instruct", persistent_cache())


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_dir), local_files_only=True)


def tiny_config(vocab_size: int, **kw: Any) -> Any:
    from transformers import LlamaConfig

    base: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
    )
    base.update(kw)
    return LlamaConfig(**base)


def build_tiny(folder: Path, tokenizer: Any, seed: int, *, instruct: bool = True) -> Path:
    """A tiny random Llama (peaky logits, so beams are well separated) with the SmolLM2 tokenizer."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer))).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({"instruct": instruct, "source": f"tiny-random-{seed}"}))
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer: Any) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-a"), smol_tokenizer, seed=1)


@pytest.fixture(scope="session")
def tiny_dir_b(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer: Any) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-b"), smol_tokenizer, seed=2)


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A LoRA adapter over tiny-a with non-zero weights (so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(out)
    return out


def tiny_settings(model: Path, data_dir: Path, **kw: Any) -> Settings:
    """Settings for an app serving a tiny model: fast, one thread, no stop defaults unless given."""
    values: dict[str, Any] = dict(model=str(model), data_dir=data_dir, device="cpu", torch_threads=1,
                                  batch_wait_ms=2.0, model_roots=[model.parent])  # pytest's temporary folders
    values.update(kw)
    return Settings(**values)


@pytest.fixture
def tiny_client(tiny_dir: Path, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    with TestClient(create_app(tiny_settings(tiny_dir, tmp_path)), raise_server_exceptions=False) as client:
        yield client


def teacher_forced(model: Any, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """Per-token log-probabilities of ``token_ids`` after ``prompt_ids``: one forward pass."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    n = len(prompt_ids)
    return [float(lp[n - 1 + i, t]) for i, t in enumerate(token_ids)]
