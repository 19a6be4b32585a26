"""Checkpoints the trainer writes load in the real generator app and change what it generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from services.common.client import BufferClient
from services.common.schemas.buffer import SampleRequest
from services.common.schemas.trainer import JobCreate
from services.trainer.training import run_job

PROMPT = "# add two numbers\n"


def _generate(gen: TestClient) -> tuple[str, float]:
    r = gen.post("/v1/generate", json={"prompts": [PROMPT], "mode": "greedy", "max_new_tokens": 12})
    assert r.status_code == 200, r.text
    cand = r.json()["results"][0]["candidates"][0]
    return cand["text"], cand["logprob"]


def _train(model: Path, buffer: BufferClient, out: Path, **kw: Any) -> Path:
    job = JobCreate(
        model=str(model), batch_size=8, micro_batch_size=8, steps=12, learning_rate=1e-2, checkpoint_every=12,
        sample=SampleRequest(dataset="toy"), **kw,
    )
    result = run_job(job, buffer=buffer, output_dir=out)
    assert result.status == "succeeded" and result.checkpoint is not None
    return result.checkpoint


def test_lora_adapter_and_full_checkpoint_load_in_the_generator(
    tiny_llama: Path, buffer: BufferClient, tmp_path: Path
) -> None:
    from services.generator.app import create_app
    from services.generator.settings import Settings

    adapter = _train(tiny_llama, buffer, tmp_path / "lora", lora=True, lora_r=8, lora_alpha=16)
    full = _train(tiny_llama, buffer, tmp_path / "full")
    settings = Settings(model=str(tiny_llama), device="cpu", data_dir=tmp_path, torch_threads=1)
    with TestClient(create_app(settings)) as gen:
        base_out = _generate(gen)
        r = gen.post("/v1/weights", json={"checkpoint": str(adapter)})
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "lora"
        lora_out = _generate(gen)
        r = gen.post("/v1/weights", json={"checkpoint": str(full)})
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "full"
        full_out = _generate(gen)
        # What the worker does on success when publish_to_generator is set.
        from services.common.client import GeneratorClient
        from services.trainer.executor import publish

        assert publish(adapter, generator=GeneratorClient(client=gen)) == (True, None)  # type: ignore[arg-type]
        assert gen.get("/health").json()["checkpoint"] == str(adapter)
        ok, error = publish(tmp_path / "nope", generator=GeneratorClient(client=gen))  # type: ignore[arg-type]
        assert not ok and error is not None and "publishing to the generator failed" in error
        assert gen.get("/health").json()["checkpoint"] == str(adapter)
    assert lora_out != base_out and full_out != base_out
    # Trained on "def add(a, b): ..." after this prompt, the model now puts more mass on what it emits.
    assert lora_out[1] > base_out[1] and full_out[1] > base_out[1]
