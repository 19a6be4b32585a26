"""Trainer wire models: ``POST /v1/jobs`` and job records."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .buffer import SampleRequest
from .types import Count, Real, StorableModel

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCreate(StorableModel):
    """A fine-tuning job on PPER minibatches sampled from the buffer."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=4096, description="Local HF folder or known model name.")
    batch_size: Count = Field(64, ge=1, le=4096, description="Examples per optimizer step.")
    micro_batch_size: Count | None = Field(None, ge=1, le=4096, description="Examples per forward pass.")
    max_tokens_per_micro_batch: Count | None = Field(
        None,
        ge=8,
        le=1_048_576,
        description="Padded tokens per forward pass at most (micro-batches cut by length-sorted token "
        "budget); unset: by micro_batch_size only.",
    )
    steps: Count = Field(100, ge=1, le=1_000_000)
    learning_rate: Real = Field(2e-5, gt=0.0, le=1.0)
    weight_decay: Real = Field(0.0, ge=0.0, le=1.0)
    warmup_steps: Count = Field(0, ge=0)
    max_grad_norm: Real = Field(1.0, gt=0.0)
    max_seq_len: Count = Field(1024, ge=8, le=32768)
    gradient_checkpointing: bool | None = Field(
        None,
        description="Recompute each decoder layer's activations in the backward pass instead of keeping them "
        "(bit-identical gradients, one more forward pass of compute, the activation memory of one layer); "
        "unset: on for CPU training (where memory, not compute, is what runs out), off on GPUs.",
    )
    prompt_format: Literal["auto", "raw", "chat"] = Field(
        "auto",
        description="How (X, t) is laid out, as the generator conditions on it: raw = prompt then program; "
        "chat = prompt as the user turn of the chat template, the assistant turn opening with a "
        "```python fence, the program and the closing fence as target; auto = chat for instruct models.",
    )
    lora: bool = False
    lora_r: Count = Field(16, ge=1, le=1024)
    lora_alpha: Count = Field(32, ge=1, le=4096)
    lora_dropout: Real = Field(0.0, ge=0.0, lt=1.0)
    checkpoint_every: Count = Field(50, ge=1)
    seed: Count = Field(0, ge=0, le=2**63 - 1)
    sample: SampleRequest = Field(default_factory=SampleRequest)
    publish_to_generator: bool = False
    generator_url: str | None = Field(None, max_length=4096)
    buffer_url: str | None = Field(None, max_length=4096)


class LossPoint(BaseModel):
    step: int
    loss: float
    tokens_per_s: float | None = None
    lr: float | None = None
    at: float | None = Field(None, description="Unix time the step finished.")
    experience_ids: list[int] | None = Field(None, description="The experiences this step trained on (this rank's share).")
    weights_versions: list[int | None] | None = Field(
        None, description="The weights version that sampled each of experience_ids (async BTP's lag)."
    )


class JobProgress(BaseModel):
    step: int = 0
    total_steps: int = 0


class JobOut(BaseModel):
    id: str
    status: JobStatus
    config: JobCreate
    progress: JobProgress
    loss_history: list[LossPoint] = Field(default_factory=list)
    checkpoint: str | None = None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(0, description="Deliveries of the job to a worker (more than 1 after a redelivery).")
    resumed_from_step: int | None = Field(None, description="Checkpoint step the last delivery resumed from.")
    cancel_requested: bool = Field(False, description="A cancel was asked while the job was running.")
    published: bool | None = Field(None, description="Whether the final checkpoint was sent to the generator.")
    tensorboard_dir: str | None = Field(None, description="Folder of the job's TensorBoard event files.")


class JobList(BaseModel):
    items: list[JobOut]
