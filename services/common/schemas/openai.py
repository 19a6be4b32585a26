"""OpenAI-compatible wire models of the generator: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

The fields the OpenAI clients and vLLM clients send. Unknown fields are ignored (as vLLM does), so
clients that send ``user``, ``presence_penalty: 0`` and the like work; penalties and ``logit_bias`` that
would change decoding are refused rather than silently ignored. vLLM's beam-search extension:
``use_beam_search`` (beam search, width ``best_of`` or ``n``), ``length_penalty`` (orders the returned
beams by ``logprob / token_count ** length_penalty``; the search itself ranks by the summed log-probability).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 16


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage counts."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=4096, description="The served model (see GET /v1/models).")
    temperature: float | None = Field(1.0, ge=0.0, le=2.0, description="0: greedy; else sampling.")
    top_p: float | None = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices per prompt.")
    best_of: int | None = Field(
        None, ge=1, le=MAX_N, description="Candidates to draw (or beams) of which the n most probable are returned."
    )
    stop: str | list[str] | None = Field(None, description="Up to 16 stop sequences, cut off the text.")
    seed: int | None = Field(None, description="Seed for sampling (reproducible choices).")
    stream: bool = Field(False, description="Server-sent events as tokens are decoded, ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    use_beam_search: bool = Field(False, description="vLLM extension: beam search of width best_of (or n).")
    length_penalty: float | None = Field(
        None, ge=-10.0, le=10.0, description="vLLM extension: order beams by logprob / length ** length_penalty."
    )
    frequency_penalty: float | None = Field(0.0, description="Only 0 is supported.")
    presence_penalty: float | None = Field(0.0, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported (must be empty).")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return v

    @model_validator(mode="after")
    def _supported(self) -> _Common:
        if self.frequency_penalty or self.presence_penalty:
            raise ValueError("frequency_penalty and presence_penalty are not supported (use 0)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError("best_of must be at least n")
        if self.stream and not self.use_beam_search and (self.best_of or self.n) > self.n:
            # which n of the best_of samples are returned is known only at the end (vLLM refuses it too)
            raise ValueError("best_of must equal n when streaming")
        return self

    def stops(self) -> list[str]:
        """The stop sequences as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Common):
    """``POST /v1/completions``: continue prompt text (or token ids) as is."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(description="A prompt, a list, or token ids.")
    max_tokens: int | None = Field(16, ge=0, le=4096, description="New tokens at most; 0 with echo scores the prompt.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Return token log-probabilities and this many alternatives.")
    echo: bool = Field(False, description="Prepend the prompt (and its log-probabilities) to each choice.")
    suffix: str | None = Field(None, description="Not supported (must be empty).")

    @model_validator(mode="after")
    def _prompt(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix is not supported")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        if len(self.prompt_list()) > 256:
            raise ValueError("at most 256 prompts per request")
        return self

    def prompt_list(self) -> list[str | list[int]]:
        """The prompts, each text or token ids."""
        p: Any = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class ChatContentPart(BaseModel):
    """A text part of a message's content (other part types are refused)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ChatContentPart] | None = None

    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``: the model's answer to a conversation, through its chat template."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=4096, description="New tokens at most (default 256).")
    max_completion_tokens: int | None = Field(None, ge=1, le=4096, description="Same as max_tokens (newer name).")
    logprobs: bool = Field(False, description="Return the log-probability of each answer token.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token (needs logprobs).")

    @model_validator(mode="after")
    def _top(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class Usage(BaseModel):
    """Token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """The legacy completions log-probability block."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One completion."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionResponse(BaseModel):
    """``object: text_completion``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    """An alternative token."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """An answer token with its alternatives."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """The chat log-probability block."""

    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    """The answer."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One answer."""

    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    """``object: chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "btp"
    root: str | None = Field(None, description="The checkpoint served under this name.")


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
