"""The generator over HTTP (TestClient on create_app) with a tiny random Llama and the SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from .conftest import teacher_forced, tiny_settings

PROMPTS = ["def add(a, b):\n    \"\"\"Sum.\"\"\"\n", "Write a function that reverses a string.", "x"]


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()


def check_candidates(body: dict[str, Any], model: Any, tokenizer: Any, returns: int | None) -> None:
    """Every candidate: logprob == teacher-forced sum, text == decode(token_ids), best first."""
    for res in body["results"]:
        cands = res["candidates"]
        assert returns is None or len(cands) == returns
        assert [c["logprob"] for c in cands] == sorted((c["logprob"] for c in cands), reverse=True)
        for c in cands:
            ref = teacher_forced(model, res["prompt_token_ids"], c["token_ids"])
            assert c["logprob"] == pytest.approx(sum(ref), abs=1e-3)
            assert c["probability"] == pytest.approx(float(torch.tensor(sum(ref)).exp()), rel=1e-3, abs=1e-12)
            assert c["token_count"] == len(c["token_ids"])
            assert c["text"] == tokenizer.decode(c["token_ids"], skip_special_tokens=True)


@pytest.mark.parametrize("fmt", ["raw", "chat"])
@pytest.mark.parametrize(
    ("mode", "extra", "returns"),
    [("beam", {"num_beams": 3}, 3), ("beam", {"num_beams": 4, "num_return_sequences": 2}, 2),
     ("greedy", {}, 1), ("sample", {"num_return_sequences": 3, "seed": 7, "temperature": 0.8}, 3)],
)
def test_logprob_is_teacher_forced_in_every_mode(
    tiny_client: Any, tiny_model: Any, smol_tokenizer: Any, fmt: str, mode: str, extra: dict[str, Any], returns: int
) -> None:
    req = {"prompts": PROMPTS, "mode": mode, "max_new_tokens": 12, "prompt_format": fmt, "stop": ["e", "\n"],
           "distinct": False, **extra}
    r = tiny_client.post("/v1/generate", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-a" or body["model"]
    assert [res["prompt_index"] for res in body["results"]] == [0, 1, 2]
    check_candidates(body, tiny_model, smol_tokenizer, returns)
    texts = [c["text"] for res in body["results"] for c in res["candidates"]]
    assert all("e" not in t and "\n" not in t for t in texts)
    if fmt == "chat":
        assert all(smol_tokenizer.decode(res["prompt_token_ids"]).endswith("```python\n") for res in body["results"])


def test_beam_mode_matches_transformers_generate(tiny_dir: Path, tmp_path: Path, tiny_model: Any) -> None:
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    settings = tiny_settings(tiny_dir, tmp_path, raw_stop=[])
    with TestClient(create_app(settings)) as client:
        for k in (1, 3):
            r = client.post("/v1/generate", json={"prompts": PROMPTS, "num_beams": k, "max_new_tokens": 10,
                                                  "prompt_format": "raw", "distinct": False})
            assert r.status_code == 200, r.text
            for res in r.json()["results"]:
                ids = res["prompt_token_ids"]
                out = tiny_model.generate(torch.tensor([ids]), num_beams=k, num_return_sequences=k, do_sample=False,
                                          length_penalty=0.0, max_new_tokens=10, eos_token_id=[0, 2], pad_token_id=2)
                hf = []
                for row in out.tolist():
                    gen = row[len(ids):]
                    cut = next((i for i, t in enumerate(gen) if t in (0, 2)), None)
                    hf.append(gen if cut is None else gen[:cut])
                assert sorted(c["token_ids"] for c in res["candidates"]) == sorted(hf)


def test_distinct_merges_identical_programs(tiny_client: Any, tiny_model: Any, smol_tokenizer: Any) -> None:
    req = {"prompts": PROMPTS, "num_beams": 4, "max_new_tokens": 8, "prompt_format": "raw", "stop": ["e", "a", " "]}
    every = tiny_client.post("/v1/generate", json={**req, "distinct": False}).json()
    merged = tiny_client.post("/v1/generate", json=req).json()
    dropped = 0
    for all_res, res in zip(every["results"], merged["results"], strict=True):
        ids = [c["token_ids"] for c in res["candidates"]]
        assert len(ids) == len({tuple(x) for x in ids})  # no program twice
        best_first: list[list[int]] = []
        for c in all_res["candidates"]:
            if c["token_ids"] not in best_first:
                best_first.append(c["token_ids"])
        assert ids == best_first  # the most probable copy of each program, in order
        dropped += len(all_res["candidates"]) - len(ids)
    assert dropped > 0, "these stops should make some beams collapse to the same program"
    check_candidates({"results": merged["results"]}, tiny_model, smol_tokenizer, None)


def test_same_seed_same_samples(tiny_client: Any) -> None:
    req = {"prompts": PROMPTS[:2], "mode": "sample", "num_return_sequences": 2, "max_new_tokens": 8, "seed": 3}
    a, b = (tiny_client.post("/v1/generate", json=req).json() for _ in range(2))
    assert a["results"] == b["results"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompts": ["x"] * 64, "num_beams": 16, "max_new_tokens": 4096}, "max_new_tokens"),
        ({"prompts": ["x"], "mode": "greedy", "num_return_sequences": 2}, "num_return_sequences"),
        ({"prompts": ["x"], "num_beams": 2, "num_return_sequences": 3}, None),
        ({"prompts": [], "num_beams": 2}, "prompts"),
        ({"prompts": ["x"], "num_beams": 0}, "num_beams"),
        ({"prompts": ["x"], "stop": [""]}, None),
        ({"prompts": ["x"], "mode": "nope"}, "mode"),
        ({"prompts": ["x"], "bogus": 1}, "bogus"),
        ({"prompts": ["word " * 3000]}, "prompts.0"),
    ],
)
def test_bad_requests_are_422_envelopes(tiny_client: Any, body: dict[str, Any], param: str | None) -> None:
    r = tiny_client.post("/v1/generate", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "validation_error" and err["message"]
    if param is not None:
        assert err["param"] == param


def test_malformed_json_is_400(tiny_client: Any) -> None:
    r = tiny_client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"


def test_health_names_the_checkpoint(tiny_client: Any, tiny_dir: Path) -> None:
    h = tiny_client.get("/health").json()
    assert h["status"] == "ok" and h["checkpoint"] == str(tiny_dir) and h["kind"] == "full"
    assert h["device"] == "cpu" and h["dtype"] == "float32"
    tiny_client.post("/v1/generate", json={"prompts": ["x"], "max_new_tokens": 2})
    assert "btp_generator_generated_tokens_total" in tiny_client.get("/metrics").text
