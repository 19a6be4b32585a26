"""POST /v1/weights: full folders, a LoRA adapter, bad checkpoints (4xx, old weights keep serving)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from .conftest import teacher_forced

REQ = {"prompts": ["def add(a, b):\n", "hello"], "num_beams": 2, "max_new_tokens": 8, "prompt_format": "raw"}


def load(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def assert_served_by(body: dict[str, Any], model: Any) -> None:
    for res in body["results"]:
        for c in res["candidates"]:
            ref = sum(teacher_forced(model, res["prompt_token_ids"], c["token_ids"]))
            assert abs(c["logprob"] - ref) < 1e-3


def test_swap_full_then_back(tiny_client: Any, tiny_dir: Path, tiny_dir_b: Path) -> None:
    before = tiny_client.post("/v1/generate", json=REQ).json()
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b)})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": tiny_dir_b.name, "checkpoint": str(tiny_dir_b), "kind": "full",
                        "previous": str(tiny_dir)}
    assert tiny_client.get("/health").json()["checkpoint"] == str(tiny_dir_b)
    after = tiny_client.post("/v1/generate", json=REQ).json()
    assert after["checkpoint"] == str(tiny_dir_b)
    assert after["results"] != before["results"]
    assert_served_by(after, load(tiny_dir_b))
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir)}).status_code == 200
    again = tiny_client.post("/v1/generate", json=REQ).json()
    assert again["results"] == before["results"]


def test_lora_adapter(tiny_client: Any, tiny_dir: Path, lora_dir: Path) -> None:
    from peft import PeftModel

    before = tiny_client.post("/v1/generate", json=REQ).json()
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(lora_dir)})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "lora" and r.json()["checkpoint"] == str(lora_dir)
    h = tiny_client.get("/health").json()
    assert h["kind"] == "lora" and h["checkpoint"] == str(lora_dir)
    after = tiny_client.post("/v1/generate", json=REQ).json()
    assert after["results"] != before["results"]
    reference = PeftModel.from_pretrained(load(tiny_dir), str(lora_dir)).eval()
    assert_served_by(after, reference)


def test_bad_checkpoints_are_4xx_and_old_weights_keep_serving(
    tiny_client: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    before = tiny_client.post("/v1/generate", json=REQ).json()
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_dir, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text("{ this is not json")
    wrong_shapes = tmp_path / "wrong-shapes"
    shutil.copytree(tiny_dir, wrong_shapes)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_dir / "model.safetensors"))
    sd = {k: (torch.zeros(3, 3) if "q_proj" in k else v) for k, v in sd.items()}
    save_file(sd, str(wrong_shapes / "model.safetensors"))
    bad_adapter = tmp_path / "bad-adapter"
    bad_adapter.mkdir()
    (bad_adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "target_modules": ["nope"], "r": 4}')
    cases = {
        str(tmp_path / "does-not-exist"): 404,
        "no-such-model-name": 404,
        str(empty): 422,
        str(garbage): 422,
        str(bad_config): 422,
        str(wrong_shapes): 422,
        str(bad_adapter): 422,
    }
    for checkpoint, status in cases.items():
        r = tiny_client.post("/v1/weights", json={"checkpoint": checkpoint})
        assert r.status_code == status, (checkpoint, r.text)
        assert r.json()["error"]["message"]
        assert tiny_client.get("/health").json()["checkpoint"] == str(tiny_dir)
    assert tiny_client.post("/v1/generate", json=REQ).json() == before
