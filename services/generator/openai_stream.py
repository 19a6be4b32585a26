"""Server-sent events of the OpenAI-compatible routes (``stream: true``).

Live streaming (sampling and greedy decoding): the engine hands each token over as the worker decodes it
(:meth:`Engine.stream`), and :class:`TextStream` releases a choice's text a token at a time as soon as it
can no longer change:

- a token is sent once the decoded text up to it is a clean prefix (no half of a multi-byte character) of
  everything decoded so far, and ends before the last ``len(longest stop) - 1`` characters, where a stop
  sequence could still begin (its start must lie there, or it would already be in the text);
- the rest is sent when the sequence ends, cut exactly as the non-streamed answer is
  (:func:`services.generator.trimming.trim`), so the concatenated stream equals the non-streamed text,
  token for token, for the same seed.

Sampled choices are streamed under the index of their draw (prompt-major, ``n`` per prompt); the
non-streamed response lists a prompt's samples most probable first, so with ``n > 1`` the same samples
may carry other indices there. Greedy ``n`` copies stream the same tokens under each index.

After the whole decode (:func:`completion_chunks`, :func:`chat_chunks`): beam search (a beam's prefix is
final only when the search ends; vLLM's beam search also yields only its final output), and requests for
alternatives (``top_logprobs`` > 0, or ``echo`` with ``logprobs``), which a teacher-forced pass computes
once the choices are known. ``best_of`` > ``n`` with ``stream`` is refused (400), as in vLLM and OpenAI.

A failure after the first event cannot change the status any more: it is sent as an event in OpenAI's
error shape (which the ``openai`` client raises), then ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from services.common.errors import BTPError
from services.common.schemas.openai import ChatCompletionResponse, CompletionResponse

from .engine import TokenStream
from .trimming import trim

log = logging.getLogger(__name__)


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


class TextStream:
    """One choice's tokens in, ``(token id, log-prob, text piece)`` out as soon as the text is final."""

    def __init__(self, tokenizer: Any, eos_token_ids: set[int], stop: Sequence[str]) -> None:
        self.tokenizer, self.eos, self.stop = tokenizer, eos_token_ids, list(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.lps: list[float] = []
        self.sent = 0  # tokens sent
        self.text = ""  # their text
        self.ended = False  # EOS or a stop sequence seen: later tokens are not part of the choice
        self.eos_seen = False

    def add(self, token_id: int, logprob: float) -> list[tuple[int, float, str]]:
        """Take the next decoded token; the tokens whose text is now final."""
        if self.ended:
            return []
        if token_id in self.eos:
            self.ended = self.eos_seen = True
            return []
        self.ids.append(token_id)
        self.lps.append(logprob)
        full = _decode(self.tokenizer, self.ids)
        bound = len(full) - self.hold
        cut = min((p for p in (full.find(s) for s in self.stop) if p >= 0), default=-1)
        if cut >= 0:
            self.ended, bound = True, min(bound, cut)
        upto = self.sent
        for m in range(self.sent + 1, len(self.ids) + 1):
            text = _decode(self.tokenizer, self.ids[:m])
            if len(text) > bound:
                break
            if full.startswith(text) and not text.endswith("\ufffd"):
                upto = m
        return self._release(upto, None)

    def finish(self) -> tuple[list[tuple[int, float, str]], str, int]:
        """The tokens not sent yet, cut as the non-streamed choice; its finish_reason and token count."""
        t = trim(self.tokenizer, self.ids, self.lps, finished=self.eos_seen, eos_token_ids=self.eos, stop=self.stop)
        if self.sent > len(t.token_ids) or not t.text.startswith(self.text):  # the rules above exclude it
            log.warning("streamed text %r is not a prefix of the final %r", self.text, t.text)
        return self._release(len(t.token_ids), t.text), t.finish_reason, len(t.token_ids)

    def _release(self, upto: int, final: str | None) -> list[tuple[int, float, str]]:
        out = []
        for i in range(self.sent, upto):
            if final is not None and i == upto - 1:
                piece = final[len(self.text):] if final.startswith(self.text) else ""
            else:
                text = _decode(self.tokenizer, self.ids[:i + 1])
                clean = text.startswith(self.text) and not text.endswith("\ufffd")
                piece = text[len(self.text):] if clean else ""  # half a character: it comes with a later token
            self.text += piece
            out.append((self.ids[i], self.lps[i], piece))
        self.sent = max(self.sent, upto)
        return out


def pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Token strings that concatenate to ``decode(ids)``, split as :class:`TextStream` splits them."""
    s = TextStream(tokenizer, set(), [])
    out = [p for t in ids for _, _, p in s.add(t, 0.0)]
    return out + [p for _, _, p in s.finish()[0]]


def sse(chunks: AsyncIterator[dict[str, Any]], stream: TokenStream | None = None) -> StreamingResponse:
    """Server-sent events of ``chunks``, then ``data: [DONE]``; ``stream`` is closed when the client leaves."""
    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield _event(chunk)
        except BTPError as exc:
            yield _event({"error": {"message": exc.message, "type": "server_error", "param": exc.param,
                                    "code": exc.error_type}})
        except Exception as exc:  # the status is sent already: report it in the stream (the client raises it)
            log.exception("streaming failed")
            yield _event({"error": {"message": f"generation failed: {exc}"[:500], "type": "server_error",
                                    "param": None, "code": None}})
        finally:
            if stream is not None:
                stream.close()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()


# -- live: tokens as they are decoded ------------------------------------------------------------------


@dataclass
class Live:
    """What a live stream needs besides the engine's :class:`TokenStream`."""

    tokenizer: Any
    eos_token_ids: set[int]
    stop: list[str]
    n: int  # choices per prompt
    greedy: bool  # one decoded sequence per prompt, sent under n indices
    prompts: int
    prompt_tokens: int


async def _live_events(live: Live, stream: TokenStream) -> AsyncIterator[tuple[str, int, Any]]:
    """("token", choice index, (id, log-prob, piece, text offset)) as they become final, then ("finish",
    index, reason) per choice and ("usage", 0, completion tokens)."""
    per = 1 if live.greedy else live.n
    texts = {(p, s): TextStream(live.tokenizer, live.eos_token_ids, live.stop)
             for p in range(live.prompts) for s in range(per)}

    def indices(p: int, s: int) -> range:
        return range(p * live.n, (p + 1) * live.n) if live.greedy else range(p * live.n + s, p * live.n + s + 1)

    async for p, s, token_id, logprob in stream.tokens():
        text = texts[(p, s)]
        for tid, lp, piece in text.add(token_id, logprob):
            for i in indices(p, s):
                yield "token", i, (tid, lp, piece, len(text.text) - len(piece))
    await stream.response()  # raises what decoding raised
    completion = 0
    for (p, s), text in texts.items():
        at = len(text.text)
        rest, reason, count = text.finish()
        for i in indices(p, s):
            offset = at
            for tid, lp, piece in rest:
                yield "token", i, (tid, lp, piece, offset)
                offset += len(piece)
            yield "finish", i, reason
            completion += count
    yield "usage", 0, completion


def _usage(live: Live, completion: int) -> dict[str, int]:
    return {"prompt_tokens": live.prompt_tokens, "completion_tokens": completion,
            "total_tokens": live.prompt_tokens + completion}


async def live_completion_chunks(
    live: Live, stream: TokenStream, head: dict[str, Any], *, logprobs: bool, echo: list[str] | None,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """``text_completion`` chunks as tokens are decoded; ``echo`` (the prompt texts) goes first."""
    tok = live.tokenizer
    if echo is not None:
        for i in range(live.prompts * live.n):
            yield head | {"choices": [{"index": i, "text": echo[i // live.n], "logprobs": None, "finish_reason": None}]}
    async for kind, i, value in _live_events(live, stream):
        if kind == "token":
            tid, lp, piece, offset = value
            if not logprobs and not piece:
                continue
            block = ({"tokens": [piece], "token_logprobs": [lp], "top_logprobs": [{_token(tok, tid): lp}],
                      "text_offset": [offset]} if logprobs else None)
            yield head | {"choices": [{"index": i, "text": piece, "logprobs": block, "finish_reason": None}]}
        elif kind == "finish":
            yield head | {"choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": value}]}
        elif include_usage:
            yield head | {"choices": [], "usage": _usage(live, value)}


async def live_chat_chunks(
    live: Live, stream: TokenStream, head: dict[str, Any], *, logprobs: bool, include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """``chat.completion.chunk`` chunks as tokens are decoded: the role first, then the content."""
    for i in range(live.prompts * live.n):
        yield head | {"choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                   "finish_reason": None}]}
    async for kind, i, value in _live_events(live, stream):
        if kind == "token":
            _, lp, piece, _ = value
            if not logprobs and not piece:
                continue
            block = ({"content": [{"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": []}]}
                     if logprobs else None)
            yield head | {"choices": [{"index": i, "delta": {"content": piece}, "logprobs": block,
                                       "finish_reason": None}]}
        elif kind == "finish":
            yield head | {"choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": value}]}
        elif include_usage:
            yield head | {"choices": [], "usage": _usage(live, value)}


def _token(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([token_id], skip_special_tokens=False))


# -- after the whole decode ----------------------------------------------------------------------------


async def completion_chunks(
    resp: CompletionResponse, pieces_of: list[list[str]], include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """A chunk per token of each choice (``pieces_of``; an echoed prompt first), then one with its finish_reason."""
    head = {"id": resp.id, "object": "text_completion", "created": resp.created, "model": resp.model}
    for ch, plain in zip(resp.choices, pieces_of, strict=True):
        lp = ch.logprobs
        parts = lp.tokens if lp is not None else [p for p in plain if p]
        for j, piece in enumerate(parts):
            block = None
            if lp is not None:
                block = {"tokens": [piece], "token_logprobs": [lp.token_logprobs[j]],
                         "top_logprobs": [lp.top_logprobs[j]] if lp.top_logprobs is not None else None,
                         "text_offset": [lp.text_offset[j]]}
            yield head | {"choices": [{"index": ch.index, "text": piece, "logprobs": block, "finish_reason": None}]}
        yield head | {"choices": [{"index": ch.index, "text": "", "logprobs": None, "finish_reason": ch.finish_reason}]}
    if include_usage and resp.usage is not None:
        yield head | {"choices": [], "usage": resp.usage.model_dump()}


async def chat_chunks(
    resp: ChatCompletionResponse, pieces_of: list[list[str]], include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The role, then a chunk per answer token, then the finish_reason, for each choice."""
    head = {"id": resp.id, "object": "chat.completion.chunk", "created": resp.created, "model": resp.model}
    for ch, plain in zip(resp.choices, pieces_of, strict=True):
        yield head | {"choices": [{"index": ch.index, "delta": {"role": "assistant", "content": ""},
                                   "logprobs": None, "finish_reason": None}]}
        content = ch.logprobs.content if ch.logprobs is not None and ch.logprobs.content is not None else None
        parts: list[tuple[str, Any]] = (
            [(t.token, {"content": [t.model_dump()]}) for t in content] if content is not None
            else [(p, None) for p in plain if p]
        )
        for piece, block in parts:
            yield head | {"choices": [{"index": ch.index, "delta": {"content": piece}, "logprobs": block,
                                       "finish_reason": None}]}
        yield head | {"choices": [{"index": ch.index, "delta": {}, "logprobs": None,
                                   "finish_reason": ch.finish_reason}]}
    if include_usage:
        yield head | {"choices": [], "usage": resp.usage.model_dump()}
