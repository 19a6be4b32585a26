"""One prompt layout: the trainer's token ids for a stored program are the generator's
``prompt_token_ids + token_ids`` for it (then the closing fence in chat, then EOS).

The buffer stores P(t) of the generator's tokens and the trainer fine-tunes on its own tokenization of
(X, t); if the two layouts drifted apart, the model would be trained on sequences whose probability was
never measured. Both sides use ``services.common.prompts``; this test holds them to it with the real
SmolLM2 weights (natural programs) and its tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.prompts import CHAT_FENCE_CLOSE
from services.generator.app import create_app
from services.trainer.data import tokenize

from .conftest import tiny_settings

PROMPTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n    return',
    'def is_even(n):\n    """Return True when n is even."""\n    return',
]


@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_trainer_ids_equal_generator_ids(smol_dir: Path, smol_tokenizer: Any, tmp_path: Path, fmt: str) -> None:
    settings = tiny_settings(smol_dir, tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"prompts": PROMPTS, "mode": "beam", "num_beams": 2, "num_return_sequences": 2,
                "max_new_tokens": 24, "prompt_format": fmt}  # fmt: skip
        r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    checked = 0
    for result in r.json()["results"]:
        prompt = PROMPTS[result["prompt_index"]]
        for cand in result["candidates"]:
            if not cand["token_ids"]:
                continue
            ex = tokenize(smol_tokenizer, prompt, cand["text"], 4096, fmt)
            generated = result["prompt_token_ids"] + cand["token_ids"]
            assert ex.n_prompt == len(result["prompt_token_ids"])
            assert list(ex.input_ids[: len(generated)]) == generated
            tail = smol_tokenizer.decode(list(ex.input_ids[len(generated) :]), skip_special_tokens=False)
            assert tail.endswith(smol_tokenizer.eos_token)
            if fmt == "chat":
                assert CHAT_FENCE_CLOSE in tail
            checked += 1
    assert checked >= 2
