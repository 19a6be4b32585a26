"""Experiment recipes: a :class:`Variant` is one fine-tuning recipe (which buffer, which replay rule);
:class:`ExperimentConfig` is everything an experiment depends on, saved as its ``config.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.schemas.buffer import ReplayRule
from services.common.schemas.generator import PromptFormat

BufferName = Literal["beam", "sample", "teacher", "passing", "failed", "model-teacher"]
SELF_GENERATED: frozenset[str] = frozenset({"beam", "sample", "passing", "failed"})
BEAM_SUBSETS: frozenset[str] = frozenset({"passing", "failed"})
"""Buffers filtered from the beam buffer: ``passing`` keeps pass_rate == 1 (rejection sampling), ``failed``
keeps pass_rate < 1 (the failed programs only: what partial credit teaches without a single full pass)."""


def keeps(buffer: str, pass_rate: float | None) -> bool:
    """Whether a judged program of the beam search belongs in ``buffer`` (its filter, if any)."""
    if buffer == "passing":
        return pass_rate == 1.0
    if buffer == "failed":
        return pass_rate is not None and pass_rate < 1.0
    return True


class Variant(ReplayRule):
    """One fine-tuning recipe: which buffer, which replay rule (the :class:`ReplayRule` fields)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=64)
    description: str = ""
    buffer: BufferName = "beam"
    alpha_sweep: bool = Field(False, description="A point of the alpha sweep (Figure 1).")
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="This recipe's learning rate (a learning-rate sweep); default the experiment's."
    )


def default_variants() -> list[Variant]:
    """The ablations, most important first (a run cut short still answers the main question)."""
    return [
        Variant(
            name="p2value-rank", description="beam buffer, P2Value rank (Eq. 8), alpha 0.5", alpha_sweep=True
        ),
        Variant(name="uniform", description="beam buffer, uniform replay", scheme="uniform"),
        Variant(
            name="rejection",
            description="beam buffer, only pass_rate = 1 programs, uniform",
            buffer="passing",
            scheme="uniform",
        ),
        Variant(
            name="proportional",
            description="beam buffer, P2Value proportional (Eq. 7)",
            scheme="proportional",
        ),
        Variant(
            name="sampling-rank",
            description="sampled (not beam) buffer, P2Value rank, alpha 0.5",
            buffer="sample",
        ),
        Variant(
            name="teacher-rank",
            description="HumanEval reference programs (C1), P2Value rank",
            buffer="teacher",
        ),
        Variant(
            name="alpha-0",
            description="beam buffer, rank, alpha 0 (pass rate only)",
            alpha=0.0,
            alpha_sweep=True,
        ),
        Variant(
            name="alpha-1",
            description="beam buffer, rank, alpha 1 (possibility only)",
            alpha=1.0,
            alpha_sweep=True,
        ),
        Variant(name="alpha-0.25", description="beam buffer, rank, alpha 0.25", alpha=0.25, alpha_sweep=True),
        Variant(name="alpha-0.75", description="beam buffer, rank, alpha 0.75", alpha=0.75, alpha_sweep=True),
    ]


class ExperimentConfig(BaseModel):
    """Everything an experiment depends on; saved as ``config.json``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=128)
    model: str = Field("SmolLM2-135M-Instruct", description="Student: known name or HF folder.")
    dataset: Literal["mbpp", "humaneval", "codeio"] = "mbpp"
    dataset_path: str | None = Field(
        None, description="The data set's file (codeio: a reasoning-gym wheel or codeio.jsonl[.gz], required)."
    )
    judge_environment: str | None = Field(
        None, description="codeio: the judge environment (BTP_JUDGE_ENVIRONMENTS) the references and the "
        "programs run in, so the tasks that need numpy/sympy are kept; none: the bare interpreter.",
    )
    import_workers: int = Field(4, ge=1, le=64, description="codeio: sandbox runs in parallel while importing.")
    test_fraction: float = Field(0.5, gt=0, lt=1)
    train_size: int = Field(40, ge=1)
    test_size: int = Field(40, ge=1)
    teacher_size: int = Field(
        40, ge=0, description="HumanEval train tasks whose reference programs teach (C1)."
    )
    k: int = Field(3, ge=1, le=16)
    max_new_tokens: int = Field(128, ge=8, le=4096)
    prompt_format: PromptFormat = "raw"
    gen_batch: int = Field(8, ge=1, le=256)
    sample_temperature: float = Field(1.0, gt=0, le=10)
    n: int = Field(8, ge=1, description="Minibatch per optimizer step (same for every variant).")
    steps: int = Field(8, ge=1, description="Optimizer steps (same for every variant).")
    learning_rate: float = Field(1e-4, gt=0, le=1)
    max_seq_len: int = Field(512, ge=16)
    lora: bool = False
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    judge_time_s: float = Field(2.0, gt=0)
    judge_memory_mb: int = Field(512, ge=16)
    bootstrap_draws: int = Field(2000, ge=100)
    device: str = Field("auto", description="Training device: auto, cpu, cuda.")
    torch_threads: int | None = Field(None, ge=1)
    rounds: int = Field(
        1,
        ge=1,
        le=50,
        description="Self-improvement rounds per variant: train, evaluate, re-sample with the new weights.",
    )
    teacher_model: str | None = Field(
        None, description="C1: a stronger model whose beam-search programs for the train tasks fill "
        "the 'model-teacher' buffer (known name or HF folder)."
    )
    teacher_prompt_format: PromptFormat = Field(
        "raw", description="How the teacher model is prompted (raw suits base models such as Gemma 3 270M)."
    )
    transfer: Literal["humaneval"] | None = Field(
        None, description="A data set never trained on, evaluated (greedy) for the base model and after each "
        "recipe's last round: the transfer check (HumanEval: all 164 tasks unless transfer_size says fewer).",
    )
    transfer_size: int | None = Field(None, ge=1, description="Transfer tasks (hash order); default all of them.")
    variants: list[Variant] = Field(default_factory=default_variants)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if "model-teacher" in {v.buffer for v in self.variants} and not self.teacher_model:
            raise ValueError("a variant replays the 'model-teacher' buffer but teacher_model is not set")
        if self.dataset == "codeio" and not self.dataset_path:
            raise ValueError("dataset codeio needs dataset_path (a reasoning-gym wheel or codeio.jsonl.gz)")
        if self.judge_environment and self.dataset != "codeio":
            raise ValueError("judge_environment applies to dataset codeio only")
        if self.rounds > 1 and self.lora:
            raise ValueError("rounds > 1 continue from the previous round's full weights: set lora to false")
        return self

    def buffers_needed(self) -> set[str]:
        need: set[str] = {v.buffer for v in self.variants}
        if need & BEAM_SUBSETS:
            need.add("beam")
        return need


