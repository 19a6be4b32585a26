"""The configuration of one `btp run`: every knob of the paper, saved as the run folder's config.json.

Defaults are the embedded main job: SmolLM2-135M-Instruct on a small MBPP slice (16 train, 16 held-out
tasks), k = 3 beams, one round, programs of at most 128 tokens and 4 fine-tuning steps of 8, so `btp run`
with no flags finishes within 15 minutes on a 2-core CPU. The prompt format is ``chat``: measured on 16
held-out MBPP tasks, SmolLM2-135M-Instruct's greedy programs passed 6.2% of the tests with the chat
template and 0% as raw completions (HumanEval raw: 0% as well).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.schemas.buffer import ReplayRule
from services.common.schemas.generator import PromptFormat

from ..datasets.loaders import ALL_DATASETS
from .steps import default_stops


class TeacherConfig(BaseModel):
    """Where the programs come from when another model samples them (teacher → student)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["generator", "openai", "jsonl"]
    url: str | None = Field(None, description="Generator URL or OpenAI-compatible base URL (…/v1).")
    model: str | None = Field(None, description="Model name sent to the OpenAI-compatible endpoint.")
    path: str | None = Field(None, description="JSONL file of programs (task_id, program, logprob?, token_count?).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")

    @model_validator(mode="after")
    def _check(self) -> TeacherConfig:
        if self.kind in ("generator", "openai") and not self.url:
            raise ValueError(f"a {self.kind} teacher needs a url")
        if self.kind == "openai" and not self.model:
            raise ValueError("an OpenAI-compatible teacher needs a model name")
        if self.kind == "jsonl" and not self.path:
            raise ValueError("a jsonl teacher needs a path")
        return self


class RunConfig(ReplayRule):
    """Algorithm 1's knobs (the replay rule's four fields, Eq. 6-8, come from :class:`ReplayRule`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    model: str = Field(description="Student model: local HF folder or known name.")
    datasets: list[str] = Field(default_factory=lambda: ["mbpp"], min_length=1)
    dataset_paths: dict[str, str] = Field(default_factory=dict)
    train_size: int = Field(16, ge=1, description="Train tasks per data set (hash-ordered slice).")
    test_size: int = Field(16, ge=1, description="Held-out tasks per data set.")
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    rounds: int = Field(1, ge=0, le=1000)
    k: int = Field(3, ge=1, le=16, description="Beams per task (top-k programs).")
    max_new_tokens: int = Field(128, ge=8, le=4096)
    prompt_format: PromptFormat = Field(
        "chat",
        description="chat: SmolLM2-135M-Instruct answers in its chat template (non-zero pass rates); raw: plain completion.",
    )
    stop: list[str] | None = Field(None, description="Stop sequences; default services.common.prompts.RAW_STOP for raw, the generator's chat stops for chat.")
    gen_batch: int = Field(8, ge=1, le=256, description="Prompts per generate call.")
    n: int = Field(8, ge=1, le=4096, description="PPER minibatch size per optimizer step.")
    steps: int = Field(4, ge=1, le=1_000_000)
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    lora: bool = False
    lora_r: int = Field(16, ge=1, le=1024)
    max_seq_len: int = Field(512, ge=8, le=32768)
    judge_time_s: float = Field(2.0, gt=0, le=600)
    judge_memory_mb: int = Field(512, ge=16, le=65536)
    seed: int = Field(0, ge=0)
    teacher: TeacherConfig | None = None
    # --- asynchronous BTP (`btp run --async`, run/asynchronous.py) ---
    asynchronous: bool = Field(False, description="Sample, judge and train at once instead of in lockstep rounds.")
    actors: int = Field(1, ge=1, le=64, description="Async: threads drawing train tasks and generating programs.")
    publish_every: int | None = Field(
        None, ge=1, le=1_000_000, description="Async: optimizer steps per published weights version (default: steps)."
    )
    max_lag: int = Field(
        1, ge=0, le=1000,
        description="Async: versions sampling may run ahead of training (0 is lockstep); sampling pauses beyond it.",
    )
    eval_every: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Async: held-out evaluation every this many versions (default: one lockstep round's steps).",
    )
    budget_programs: int | None = Field(
        None, ge=1, description="Async: stop after training on this many programs (default: rounds x steps x n)."
    )
    budget_seconds: float | None = Field(None, gt=0, description="Async: stop after this many wall seconds.")

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        unknown = [d for d in self.datasets if d not in ALL_DATASETS]
        if unknown:
            raise ValueError(f"unknown data set(s) {', '.join(unknown)}; choose from {', '.join(ALL_DATASETS)}")
        if self.asynchronous and self.teacher is not None:
            raise ValueError("asynchronous runs sample with the student's own weights; a teacher needs lockstep rounds")
        return self

    def steps_per_version(self) -> int:
        """Async: optimizer steps between two published weights versions."""
        return self.publish_every or self.steps

    def versions_per_eval(self) -> int:
        """Async: versions between two held-out evaluations (default: one lockstep round's worth of steps)."""
        return self.eval_every or max(1, -(-self.steps // self.steps_per_version()))

    def program_budget(self) -> int | None:
        """Async: programs to train on before stopping: ``budget_programs``, else none when a wall-time budget
        is set, else as many as a lockstep run of ``rounds`` rounds trains."""
        if self.budget_programs is not None:
            return self.budget_programs
        return None if self.budget_seconds is not None else self.rounds * self.steps * self.n

    def stops(self) -> list[str]:
        """The stop sequences used for generation."""
        if self.stop is not None:
            return self.stop
        return default_stops(self.prompt_format)
