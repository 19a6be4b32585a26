"""Generator wire models: ``POST /v1/generate``, ``POST /v1/weights``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .types import Count, Real

GenerationMode = Literal["beam", "sample", "greedy"]
FinishReason = Literal["stop", "length"]
PromptFormat = Literal["auto", "raw", "chat"]


class GenerateRequest(BaseModel):
    """Prompts to complete; beam mode returns the top-k programs with their exact probabilities."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1, max_length=256, description="Prompts, batched together.")
    mode: GenerationMode = Field("beam", description="beam (top-k by beam search), sample or greedy.")
    num_beams: Count = Field(3, ge=1, le=16, description="Beams (k) in beam mode.")
    num_return_sequences: Count | None = Field(
        None, ge=1, le=16, description="Candidates per prompt; default num_beams in beam mode, else 1."
    )
    max_new_tokens: Count = Field(256, ge=1, le=4096, description="Generated tokens at most.")
    stop: list[str] = Field(default_factory=list, max_length=16, description="Stop sequences (trimmed off).")
    temperature: Real = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature (sample mode).")
    top_p: Real = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (sample mode).")
    seed: Count | None = Field(None, ge=0, le=2**32 - 1, description="Seed for sample mode.")
    distinct: bool = Field(
        True,
        description="Merge candidates whose trimmed programs are identical (beams that differ only after a "
        "stop sequence), keeping the most probable; a result may then hold fewer candidates.",
    )
    token_logprobs: bool = Field(
        False, description="Also return each candidate's per-token log-probabilities (`token_logprobs`)."
    )
    prompt_format: PromptFormat = Field(
        "auto",
        description="raw: complete the prompt as is; chat: wrap it in the model's chat template and cut "
        "the code out of a fenced answer; auto: chat for instruct models with a template, else raw.",
    )

    @model_validator(mode="after")
    def _check_return(self) -> GenerateRequest:
        if self.mode == "beam" and self.num_return_sequences is not None and self.num_return_sequences > self.num_beams:
            raise ValueError("num_return_sequences must be at most num_beams in beam mode")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty")
        return self

    def returns(self) -> int:
        """Candidates returned per prompt."""
        if self.num_return_sequences is not None:
            return self.num_return_sequences
        return self.num_beams if self.mode == "beam" else 1


class GeneratedCandidate(BaseModel):
    """One program with the log-probability of exactly its returned tokens."""

    text: str
    token_count: int = Field(ge=0)
    logprob: float = Field(le=0.0)
    probability: float = Field(ge=0.0, le=1.0)
    finish_reason: FinishReason
    token_ids: list[int] = Field(default_factory=list)
    token_logprobs: list[float] | None = Field(
        None, description="log P of each of token_ids (their sum is logprob); only when the request asks."
    )


class GenerationResult(BaseModel):
    """Candidates for one prompt, best first."""

    prompt_index: int = Field(ge=0)
    prompt_token_ids: list[int] = Field(default_factory=list)
    candidates: list[GeneratedCandidate]


class GenerateResponse(BaseModel):
    """Results in prompt order."""

    model: str
    checkpoint: str
    weights_version: int = Field(0, ge=0, description="Version of the weights that produced every result.")
    results: list[GenerationResult]


class WeightsRequest(BaseModel):
    """Swap the served weights: a full HF folder, a LoRA adapter folder, or a known model name."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(min_length=1, max_length=4096)
    version: Count | None = Field(
        None, ge=0, le=2**62,
        description="Version of these weights. Versions only move forward within a lineage: an older version "
        "is a 409, the same version with the same checkpoint is a no-op (a retried publish); omitted: the "
        "served version + 1.",
    )
    lineage: str | None = Field(
        None, min_length=1, max_length=256,
        description="Who numbers the versions (an async run's name). A lineage other than the served one "
        "starts its own count at `version`; omitted: the served lineage.",
    )


class WeightsResponse(BaseModel):
    """What is served after the swap."""

    model: str
    checkpoint: str
    kind: Literal["full", "lora"]
    previous: str | None = None
    version: int = Field(0, ge=0, description="Version of the weights served now.")
    previous_version: int | None = None
    lineage: str | None = None
