"""OpenAI-compatible routes of the generator: ``GET /v1/models``, ``POST /v1/completions``, ``/v1/chat/completions``.

A translation layer only: every request becomes a :class:`GenerateRequest` decoded by the same
:class:`Engine` as ``/v1/generate`` (same batching, weights, trimming), so a choice's ``logprobs`` are
the native candidate's ``token_logprobs`` and sum to its ``logprob``.

- Prompts: ``/v1/completions`` continues the prompt as is (``raw`` layout of
  :mod:`services.common.prompts`, or token ids); ``/v1/chat/completions`` renders ``messages`` with the
  model's chat template (:func:`encode_messages`, nothing pre-filled). Stop sequences are the request's
  only (no code-completion defaults), cut off the text as OpenAI does.
- Decoding: ``temperature`` 0 is greedy (``n`` copies), else sampling with ``top_p`` and ``seed``,
  ``best_of`` candidates of which the ``n`` most probable are returned; ``use_beam_search`` (vLLM) is
  beam search of width ``best_of`` or ``n``, ordered by ``logprob / len ** length_penalty`` when given.
- ``top_logprobs`` and ``echo``'s prompt log-probabilities come from one teacher-forced pass
  (:mod:`.scoring`); the chosen tokens keep decoding's values. ``max_tokens: 0`` with ``echo`` scores a
  prompt without generating (what lm-evaluation-harness's ``local-completions`` does for log-likelihoods).
- ``stream``: server-sent events, a chunk per token, ``data: [DONE]`` last: as the tokens are decoded for
  sampling and greedy decoding, after the decode for beam search and alternatives (:mod:`.openai_stream`).
- Errors on these paths use OpenAI's shape (:func:`openai_error`): ``{"error": {"message", "type",
  "param", "code"}}``, with a validation failure as 400 ``invalid_request_error``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from services import models
from services.common.errors import BTPError, NotFoundError, ValidationError
from services.common.prompts import encode_messages, encode_prompt
from services.common.schemas.generator import GenerateRequest
from services.common.schemas.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    TokenLogprob,
    TopLogprob,
    Usage,
)

from .deps import EngineDep
from .engine import Engine, TokenStream
from .openai_stream import (
    Live,
    chat_chunks,
    completion_chunks,
    live_chat_chunks,
    live_completion_chunks,
    pieces,
    sse,
)

OPENAI_PATHS = frozenset({"/v1/models", "/v1/completions", "/v1/chat/completions"})
CHAT_DEFAULT_MAX_TOKENS = 256
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}

router = APIRouter(prefix="/v1", tags=["openai"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "description": "with stream: true"}}},
    400: {"description": "Invalid request (OpenAI error shape)"},
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "Unknown model"},
    413: {"description": "Request body too large"},
    429: {"description": "Generation queue full"},
    503: {"description": "Model not loaded yet"},
}


def openai_error(path: str, exc: BTPError) -> tuple[int, dict[str, Any]] | None:
    """OpenAI's error shape on the OpenAI-compatible paths; None elsewhere (the BTP envelope)."""
    if path not in OPENAI_PATHS:
        return None
    status = 400 if exc.status == 422 else exc.status
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if status == 404 and exc.param == "model" else exc.error_type
    return status, {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": code}}


@dataclass
class Choice:
    """One decoded choice: generated ids, their log-probabilities (from decoding) and text."""

    prompt_index: int
    token_ids: list[int]
    token_logprobs: list[float]
    text: str
    finish_reason: str


def _check_model(engine: Engine, handle: models.LoadedModel, name: str) -> None:
    if name not in {handle.name, handle.checkpoint, engine.settings.model}:
        raise NotFoundError(f"The model `{name}` does not exist; this generator serves `{handle.name}`", param="model")


def _generate_request(
    req: CompletionRequest | ChatCompletionRequest, prompts: int, max_tokens: int,
) -> GenerateRequest:
    """The native request that decodes ``req`` (prompts given as ids beside it)."""
    n, common = req.n, {"prompts": [""] * prompts, "max_new_tokens": max_tokens, "prompt_format": "raw",
                        "distinct": False, "token_logprobs": True}
    if req.use_beam_search:
        width = max(req.best_of or n, n)
        gen = GenerateRequest(mode="beam", num_beams=width, num_return_sequences=width, **common)  # type: ignore[arg-type]
    elif not req.temperature:
        gen = GenerateRequest(mode="greedy", **common)  # type: ignore[arg-type]
    else:
        seed = req.seed % 2**32 if req.seed is not None else None
        gen = GenerateRequest(mode="sample", num_return_sequences=req.best_of or n, temperature=req.temperature,
                              top_p=req.top_p or 1.0, seed=seed, **common)  # type: ignore[arg-type]
    return gen


async def _decode(
    engine: Engine, req: CompletionRequest | ChatCompletionRequest, prompt_ids: list[list[int]], max_tokens: int,
) -> list[Choice]:
    """The engine's candidates for each prompt, as ``n`` choices per prompt (prompt-major order)."""
    n, gen = req.n, _generate_request(req, len(prompt_ids), max_tokens)
    resp = await engine.generate(gen, prompt_ids=prompt_ids, stop=req.stops())
    choices: list[Choice] = []
    for result in resp.results:
        cands = list(result.candidates)
        if req.use_beam_search and req.length_penalty:
            penalty = req.length_penalty
            cands.sort(key=lambda c: -c.logprob / max(1, c.token_count) ** penalty)
        if gen.mode == "greedy":
            cands = cands * n
        for c in cands[:n]:
            choices.append(Choice(result.prompt_index, c.token_ids, list(c.token_logprobs or []), c.text,
                                  c.finish_reason))
    return choices


def _live(
    engine: Engine, handle: models.LoadedModel, req: CompletionRequest | ChatCompletionRequest,
    prompt_ids: list[list[int]], max_tokens: int,
) -> tuple[TokenStream, Live]:
    """Start decoding with the tokens handed over as they come (sampling, greedy)."""
    gen = _generate_request(req, len(prompt_ids), max_tokens)
    stream = engine.stream(gen, prompt_ids=prompt_ids, stop=req.stops())
    live = Live(handle.tokenizer, handle.eos_token_ids, req.stops(), req.n, gen.mode == "greedy", len(prompt_ids),
                sum(len(p) for p in prompt_ids))
    return stream, live


def _include_usage(req: CompletionRequest | ChatCompletionRequest) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage


def _token(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([token_id], skip_special_tokens=False))


async def _alternatives(
    engine: Engine, handle: models.LoadedModel, prompt: list[int], choice: Choice, top: int, start: int,
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Scored positions from ``start`` (an index into prompt + generated ids) to the end."""
    return await engine.score(handle, prompt + choice.token_ids, start=start, top=top)


def _created() -> int:
    return int(time.time())


# -- routes ------------------------------------------------------------------------------------------


@router.get("/models", response_model=ModelList, responses={k: v for k, v in RESPONSES.items() if k in (401, 503)})
async def list_models(engine: EngineDep) -> ModelList:
    """The served model (OpenAI-compatible)."""
    handle = engine.served()
    return ModelList(data=[ModelCard(id=handle.name, created=engine.started, root=handle.checkpoint)])


@router.post("/completions", response_model=CompletionResponse, responses=RESPONSES)
async def completions(req: CompletionRequest, engine: EngineDep) -> Any:
    """Complete prompts as is (OpenAI-compatible; vLLM's beam-search extension)."""
    handle = engine.served()
    _check_model(engine, handle, req.model)
    tok = handle.tokenizer
    prompts = req.prompt_list()
    prompt_ids = [engine.check_prompt(handle, list(p) if isinstance(p, list) else encode_prompt(tok, p, "raw"), "prompt")
                  for p in prompts]
    max_tokens = req.max_tokens if req.max_tokens is not None else 16
    live_ok = req.logprobs is None or (req.logprobs == 0 and not req.echo)  # else alternatives: after the decode
    if req.stream and max_tokens and not req.use_beam_search and live_ok:
        stream, live = _live(engine, handle, req, prompt_ids, max_tokens)
        chunk_head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": _created(),
                      "model": handle.name}
        echo = ([p if isinstance(p, str) else str(tok.decode(p, skip_special_tokens=True)) for p in prompts]
                if req.echo else None)
        return sse(live_completion_chunks(live, stream, chunk_head, logprobs=req.logprobs == 0, echo=echo,
                                          include_usage=_include_usage(req)), stream)
    if max_tokens == 0:
        if not req.echo:
            raise ValidationError("max_tokens 0 needs echo (scoring the prompt)", param="max_tokens")
        choices = [Choice(i, [], [], "", "length") for i in range(len(prompt_ids)) for _ in range(req.n)]
    else:
        choices = await _decode(engine, req, prompt_ids, max_tokens)
    out: list[CompletionChoice] = []
    for index, ch in enumerate(choices):
        prompt = prompt_ids[ch.prompt_index]
        source = prompts[ch.prompt_index]
        head = (source if isinstance(source, str) else str(tok.decode(prompt, skip_special_tokens=True))) if req.echo else ""
        block = None
        if req.logprobs is not None:
            top = req.logprobs
            lps: list[float | None] = []
            alts: list[dict[str, float] | None] = []
            if req.echo or top > 0:
                start = 0 if req.echo else len(prompt)
                scored = await _alternatives(engine, handle, prompt, ch, top, start)
                if req.echo:
                    lps.append(None)
                    alts.append(None)
                    scored_prompt, scored_gen = scored[:len(prompt) - 1], scored[len(prompt) - 1:]
                    for (value, a), tid in zip(scored_prompt, prompt[1:], strict=True):
                        lps.append(value)
                        alts.append({**{_token(tok, t): v for t, v in a}, _token(tok, tid): value})
                else:
                    scored_gen = scored
                for (_, a), tid, value in zip(scored_gen, ch.token_ids, ch.token_logprobs, strict=True):
                    lps.append(value)
                    alts.append({**{_token(tok, t): v for t, v in a}, _token(tok, tid): value})
            else:
                lps = list(ch.token_logprobs)
                alts = [{_token(tok, t): v} for t, v in zip(ch.token_ids, ch.token_logprobs, strict=True)]
            parts = (pieces(tok, prompt) if req.echo else []) + pieces(tok, ch.token_ids)
            offsets, at = [], 0
            for p in parts:
                offsets.append(at)
                at += len(p)
            block = CompletionLogprobs(tokens=parts, token_logprobs=lps, top_logprobs=alts, text_offset=offsets)
        out.append(CompletionChoice(index=index, text=head + ch.text, logprobs=block,
                                    finish_reason=ch.finish_reason))  # type: ignore[arg-type]
    usage = _usage(prompt_ids, choices)
    resp = CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=_created(), model=handle.name,
                              system_fingerprint=handle.checkpoint, choices=out, usage=usage)
    if req.stream:
        streamed = [([out[i].text[:len(out[i].text) - len(ch.text)]] if req.echo else []) + pieces(tok, ch.token_ids)
                    for i, ch in enumerate(choices)]
        return sse(completion_chunks(resp, streamed, _include_usage(req)))
    return resp


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=RESPONSES)
async def chat_completions(req: ChatCompletionRequest, engine: EngineDep) -> Any:
    """Answer a conversation through the model's chat template (OpenAI-compatible)."""
    handle = engine.served()
    _check_model(engine, handle, req.model)
    tok = handle.tokenizer
    if not getattr(tok, "chat_template", None):
        raise ValidationError(f"`{handle.name}` has no chat template; use /v1/completions", param="messages")
    try:
        prompt = encode_messages(tok, [{"role": m.role, "content": m.text()} for m in req.messages])
    except Exception as exc:  # a template may refuse a conversation (roles out of order, ...)
        raise ValidationError(f"the chat template refused these messages: {exc}"[:500], param="messages") from exc
    engine.check_prompt(handle, prompt, "messages")
    max_tokens = req.max_completion_tokens or req.max_tokens or CHAT_DEFAULT_MAX_TOKENS
    if req.stream and not req.use_beam_search and not req.top_logprobs:
        stream, live = _live(engine, handle, req, [prompt], max_tokens)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": _created(),
                "model": handle.name}
        return sse(live_chat_chunks(live, stream, head, logprobs=req.logprobs, include_usage=_include_usage(req)), stream)
    choices = await _decode(engine, req, [prompt], max_tokens)
    out: list[ChatChoice] = []
    for index, ch in enumerate(choices):
        block = None
        if req.logprobs:
            top = req.top_logprobs or 0
            scored = await _alternatives(engine, handle, prompt, ch, top, len(prompt)) if top else []
            content = []
            for j, (piece, tid, value) in enumerate(zip(pieces(tok, ch.token_ids), ch.token_ids, ch.token_logprobs,
                                                        strict=True)):
                alts = [TopLogprob(token=_token(tok, t), logprob=v, bytes=list(_token(tok, t).encode()))
                        for t, v in (scored[j][1] if scored else [])]
                alts = [a if a.token != _token(tok, tid) else TopLogprob(token=a.token, logprob=value, bytes=a.bytes)
                        for a in alts]
                content.append(TokenLogprob(token=piece, logprob=value, bytes=list(piece.encode()), top_logprobs=alts))
            block = ChoiceLogprobs(content=content)
        out.append(ChatChoice(index=index, message=AssistantMessage(content=ch.text), logprobs=block,
                              finish_reason=ch.finish_reason))  # type: ignore[arg-type]
    resp = ChatCompletionResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=_created(), model=handle.name,
                                  system_fingerprint=handle.checkpoint, choices=out,
                                  usage=_usage([prompt], choices))
    if req.stream:
        streamed = [pieces(tok, ch.token_ids) for ch in choices]
        return sse(chat_chunks(resp, streamed, _include_usage(req)))
    return resp


def _usage(prompt_ids: list[list[int]], choices: list[Choice]) -> Usage:
    prompt = sum(len(p) for p in prompt_ids)
    completion = sum(len(c.token_ids) for c in choices)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
