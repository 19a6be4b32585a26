"""``run_job`` end to end against the real buffer app: PPER batches, checkpoints, resume, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.common.client import BufferClient
from services.common.schemas.buffer import SampleRequest
from services.common.schemas.trainer import JobCreate, LossPoint
from services.trainer import checkpoint as ckpt
from services.trainer.training import JobConfigError, run_job


def _job(model: Path, **kw: object) -> JobCreate:
    base: dict[str, object] = {
        "model": str(model), "batch_size": 8, "micro_batch_size": 4, "steps": 6, "learning_rate": 3e-3,
        "checkpoint_every": 2, "seed": 7, "sample": SampleRequest(dataset="toy", scheme="rank"),
    }
    base.update(kw)
    return JobCreate.model_validate(base)


def test_run_job_trains_checkpoints_and_logs(tiny_llama: Path, buffer: BufferClient, tmp_path: Path) -> None:
    seen: list[LossPoint] = []
    out = tmp_path / "job"
    result = run_job(_job(tiny_llama), buffer=buffer, output_dir=out, on_step=seen.append)
    assert result.status == "succeeded" and result.step == 6
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(p.loss)) and (p.tokens_per_s or 0) > 0 for p in seen)
    assert [c.step for c in ckpt.list_checkpoints(out)] == [2, 4, 6]
    assert result.checkpoint == out / "step-6"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out / "step-6")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    diffs = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters(), strict=True)]
    assert all(diffs)


def test_resume_continues_exactly(tiny_llama: Path, buffer: BufferClient, tmp_path: Path) -> None:
    """A job stopped after step 3 and run again ends where an uninterrupted run ends."""
    straight = run_job(_job(tiny_llama), buffer=buffer, output_dir=tmp_path / "a")
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    first = run_job(_job(tiny_llama), buffer=buffer, output_dir=tmp_path / "b", cancel=stop_after_three)
    assert first.status == "cancelled" and first.step == 3
    resumed_at: list[int] = []
    second = run_job(_job(tiny_llama), buffer=buffer, output_dir=tmp_path / "b", on_resume=resumed_at.append)
    assert resumed_at == [3] and second.resumed_from == 3 and second.status == "succeeded"
    assert [p.step for p in second.loss_history] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight.loss_history, second.loss_history, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4, abs=1e-5)
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "a" / "step-6" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "step-6" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_lora_job_saves_an_adapter(tiny_llama: Path, buffer: BufferClient, tmp_path: Path) -> None:
    result = run_job(_job(tiny_llama, lora=True, lora_r=4, steps=2), buffer=buffer, output_dir=tmp_path / "l")
    assert result.kind == "lora"
    assert result.checkpoint is not None
    assert (result.checkpoint / "adapter_config.json").is_file()
    assert not (result.checkpoint / "model.safetensors").exists()


def test_empty_buffer_is_a_clear_error(tiny_llama: Path, buffer: BufferClient, tmp_path: Path) -> None:
    job = _job(tiny_llama, sample=SampleRequest(dataset="no-such-dataset"))
    with pytest.raises(JobConfigError, match="no eligible experiences"):
        run_job(job, buffer=buffer, output_dir=tmp_path / "e")


def test_unknown_model_is_a_clear_error(buffer: BufferClient, tmp_path: Path) -> None:
    from services.common.errors import ValidationError

    with pytest.raises(ValidationError, match="unknown model"):
        run_job(_job(tmp_path / "missing"), buffer=buffer, output_dir=tmp_path / "u")
