"""The generation engine: the served weights, request planning, dynamic batching and weight swaps.

Pure core (no FastAPI). One worker thread runs the model and batches: requests wait in a bounded
queue (``max_queue`` requests waiting or running; :class:`OverloadedError`, 429, beyond), and
requests that decode alike (same mode, beams, length, stops, format, sampling knobs, weights) are
merged into one batch of up to ``max_batch_prompts`` prompts when they arrive within
``batch_wait_ms`` of each other or while the model is busy with the previous batch, so they share
forward passes. Hand-off is through thread-safe futures, so callers may come from any event loop
or thread (the embedded driver, several TestClients).

Weights: every request takes the weights that are current when it is *accepted* (a reference to an
immutable :class:`LoadedModel`); :meth:`Engine.swap_weights` loads and checks the new checkpoint
beside the old one and then replaces the reference, so requests already accepted finish on the old
weights and later ones use the new. A checkpoint that fails to load or to run a forward pass is a
422 and the old weights keep serving.
Every swap carries a version (``WeightsRequest.version``, or the served one + 1): versions only move
forward within a lineage (an older one is a 409, the same one with the same checkpoint a no-op, so a
retried publish is harmless), and every response names the version that produced it
(``weights_version``), which async BTP stores with each program.

Beam search runs ``services.generator.cuda.cuda_beam_search`` on CUDA devices when that module
imports, else the reference :func:`services.generator.beam.beam_search`.

Streaming (:meth:`Engine.stream`): a request may carry a token listener, called from the worker thread
with every token as it is decoded (sampling: each sequence's tokens; greedy: the single beam's, which is
final as it grows). Beam search of width > 1 reports nothing until it ends: a beam's prefix may still be
dropped at any step (vLLM's beam search likewise yields only its final output). A batch with a listener
decodes greedily with the reference search, whose steps are observable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import models
from services.common.errors import ConflictError, OverloadedError, UnavailableError, ValidationError
from services.common.prompts import encode_prompt, resolve_format, stop_sequences
from services.common.schemas.generator import (
    GeneratedCandidate,
    GenerateRequest,
    GenerateResponse,
    GenerationResult,
    WeightsResponse,
)

from .beam import Beam
from .settings import Settings
from .trimming import trim

log = logging.getLogger(__name__)

BeamFn = Callable[..., list[list[Beam]]]
TokenListener = Callable[[int, int, int, float], None]
"""Called with (prompt index, sequence index, token id, log-probability) as a token is decoded."""


@dataclass
class Plan:
    """A validated request: encoded prompts and how to decode them."""

    request: GenerateRequest
    fmt: str
    prompt_ids: list[list[int]]
    stop: list[str]
    returns: int
    seeds: list[int] | None

    def key(self, handle: models.LoadedModel) -> tuple[Any, ...]:
        """Requests with equal keys can share a batch."""
        r = self.request
        sampling = (r.temperature, r.top_p) if r.mode == "sample" else ()
        width = r.num_beams if r.mode == "beam" else self.returns
        return (id(handle), r.mode, width, r.max_new_tokens, tuple(self.stop), sampling)


@dataclass
class _Job:
    plan: Plan
    handle: models.LoadedModel
    future: Future[list[list[Beam]]]
    key: tuple[Any, ...] = field(default=())
    listener: TokenListener | None = None


class TokenStream:
    """One accepted request's tokens as the worker decodes them (:meth:`tokens`), then its response.

    The worker thread hands tokens to the caller's event loop; the end of the request (result or failure)
    follows its last token through the same queue, so :meth:`tokens` ends exactly when decoding has.
    """

    def __init__(self, engine: Engine, plan: Plan, handle: models.LoadedModel, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.plan, self.handle = engine, plan, handle
        self.future: Future[list[list[Beam]]] = Future()
        self._loop = loop
        self._queue: asyncio.Queue[tuple[int, int, int, float] | None] = asyncio.Queue()
        self._closed = False
        self.future.add_done_callback(lambda _: self._put(None))

    def _put(self, item: tuple[int, int, int, float] | None) -> None:
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed (client gone): keep decoding for the batch
            self._closed = True

    def listen(self, prompt_index: int, sequence: int, token_id: int, logprob: float) -> None:
        """The worker's :data:`TokenListener` for this request."""
        self._put((prompt_index, sequence, token_id, logprob))

    async def tokens(self) -> AsyncIterator[tuple[int, int, int, float]]:
        """(prompt index, sequence index, token id, log-probability) as decoded; ends when the request has."""
        while (item := await self._queue.get()) is not None:
            yield item

    async def response(self) -> GenerateResponse:
        """The whole response (as :meth:`Engine.generate` returns it); raises what decoding raised."""
        beams = await asyncio.wrap_future(self.future)
        return self.engine.respond(self.plan, self.handle, beams)

    def close(self) -> None:
        """Stop handing tokens over (the consumer left); decoding goes on for the rest of its batch."""
        self._closed = True


def pick_beam_fn(device: str, use_cuda: bool) -> BeamFn:
    """The CUDA fast path on CUDA devices when it imports, else the reference beam search."""
    from .beam import beam_search

    if use_cuda and device.startswith("cuda"):
        try:
            from .cuda import cuda_beam_search  # type: ignore[import-not-found,unused-ignore]
        except Exception as exc:  # the fast path is optional; fall back to the reference
            log.info("cuda_beam unavailable (%s); using the reference beam search", exc)
        else:
            return cuda_beam_search  # type: ignore[no-any-return]
    return beam_search


class Engine:
    """Serves one set of weights at a time; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: models.LoadedModel | None = None
        self._base: models.LoadedModel | None = None  # last full model (base for LoRA adapters)
        # (checkpoint, name, version, lineage) released by park(), reloaded on use
        self._parked: tuple[str, str, int, str | None] | None = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _pending and stats
        self._run_lock = threading.Lock()  # held while the model runs a batch
        self._swap_lock = threading.Lock()
        self._pending = 0
        self.device = ""
        self.dtype: Any = None
        self.started = int(time.time())
        self.stats = {"requests": 0, "prompts": 0, "batches": 0, "generated_tokens": 0, "swaps": 0}

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> models.LoadedModel:
        """Resolve (converting once if needed) and load the configured model; blocking."""
        import torch

        models.tune_malloc()
        threads = self.settings.torch_threads or max(1, (os.cpu_count() or 2) // 2)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.device = models.pick_device(self.settings.device)
        self.dtype = models.pick_dtype(self.settings.dtype, self.device)
        folder = models.resolve_model(self.settings.model, self.settings.resolved_model_cache_dir())
        loaded = models.load_folder(folder, device=self.device, dtype=self.dtype, name=self._name(self.settings.model, folder))
        self.current = self._base = loaded
        log.info("serving %s from %s on %s", loaded.name, loaded.checkpoint, self.device)
        return loaded

    def start_worker(self) -> None:
        """Start the batcher thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker_loop, name="btp-generator", daemon=True)
            self._thread.start()

    async def start(self) -> None:
        """Load the model (off the event loop) and start the batcher thread."""
        if self.current is None:
            await asyncio.to_thread(self.load)
        self.start_worker()

    async def stop(self) -> None:
        """Stop the batcher thread after the batch it is running."""
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 60)
            self._thread = None

    @staticmethod
    def _name(requested: str, folder: Path) -> str:
        known = models.known_model(requested)
        return known.name if known is not None else folder.name

    # -- planning --------------------------------------------------------------------------
    def plan(
        self, req: GenerateRequest, handle: models.LoadedModel, *,
        prompt_ids: list[list[int]] | None = None, stop: list[str] | None = None,
    ) -> Plan:
        """Validate limits and encode the prompts; raises ValidationError (422).

        ``prompt_ids`` (already encoded prompts, one per ``req.prompts``) and ``stop`` (the exact stop
        sequences, no defaults added) let the OpenAI-compatible routes reuse the same decoding.
        """
        s = self.settings
        if req.mode == "greedy" and req.returns() != 1:
            raise ValidationError("greedy mode returns exactly one candidate per prompt", param="num_return_sequences")
        returns = req.returns()
        width = req.num_beams if req.mode == "beam" else returns
        work = len(req.prompts) * width * req.max_new_tokens
        if work > s.max_work_tokens:
            raise ValidationError(
                f"request asks for {len(req.prompts)} prompts x {width} beams/samples x {req.max_new_tokens} "
                f"new tokens = {work}, over the limit of {s.max_work_tokens}; split it or ask for less",
                param="max_new_tokens",
            )
        fmt = resolve_format(req.prompt_format, instruct=handle.instruct, tokenizer=handle.tokenizer)
        if fmt == "chat" and not getattr(handle.tokenizer, "chat_template", None):
            raise ValidationError("prompt_format 'chat' needs a model with a chat template", param="prompt_format")
        encoded = prompt_ids if prompt_ids is not None else [encode_prompt(handle.tokenizer, p, fmt) for p in req.prompts]
        prompt_ids = [self.check_prompt(handle, ids, f"prompts.{i}") for i, ids in enumerate(encoded)]
        limit = getattr(handle.model.config, "max_position_embeddings", None)
        longest = max(len(p) for p in prompt_ids) + req.max_new_tokens
        if isinstance(limit, int) and longest > limit:
            raise ValidationError(
                f"prompt plus max_new_tokens is {longest} tokens, over the model's {limit}", param="max_new_tokens"
            )
        if stop is None:
            stop = stop_sequences(fmt, req.stop, raw_default=s.raw_stop, chat_default=s.chat_stop)
        seeds = None
        if req.mode == "sample":
            base = req.seed if req.seed is not None else random.randrange(2**32)
            seeds = [(base * 1_000_033 + i) % (2**62) for i in range(len(prompt_ids))]
        return Plan(req, fmt, prompt_ids, stop, returns, seeds)

    def check_prompt(self, handle: models.LoadedModel, ids: list[int], param: str) -> list[int]:
        """An encoded prompt within the limits: not empty, at most ``max_prompt_tokens``, ids in the vocabulary."""
        if not ids:
            raise ValidationError(f"{param}: the prompt encodes to no tokens", param=param)
        if len(ids) > self.settings.max_prompt_tokens:
            raise ValidationError(
                f"{param}: {len(ids)} prompt tokens, over the limit of {self.settings.max_prompt_tokens}", param=param
            )
        vocab = int(handle.model.get_input_embeddings().num_embeddings)
        if any(not 0 <= t < vocab for t in ids):
            raise ValidationError(f"{param}: token ids must be in [0, {vocab})", param=param)
        return ids

    # -- decoding (worker thread) ------------------------------------------------------------
    def decode(
        self, handle: models.LoadedModel, plans: Sequence[Plan], listeners: Sequence[TokenListener | None] = (),
    ) -> list[list[list[Beam]]]:
        """Decode several compatible plans together, in chunks of ``max_batch_prompts``; blocking.

        ``listeners`` (one per plan, or none) hear each plan's tokens as they are decoded (see the module
        docstring: sampling and greedy only)."""
        first = plans[0]
        req = first.request
        prompts = [p for plan in plans for p in plan.prompt_ids]
        seeds = [x for plan in plans for x in (plan.seeds or [])] or None
        # the listener and the plan's own prompt index of every prompt of the batch
        owners = [(fn, i) for plan, fn in zip(plans, listeners or [None] * len(plans), strict=True)
                  for i in range(len(plan.prompt_ids))]
        listening = any(fn is not None for fn, _ in owners)
        width = req.num_beams if req.mode == "beam" else 1
        chunk = self.settings.max_batch_prompts
        beams: list[list[Beam]] = []
        for lo in range(0, len(prompts), chunk):
            part = prompts[lo:lo + chunk]
            common: dict[str, Any] = {
                "max_new_tokens": req.max_new_tokens, "eos_token_ids": handle.eos_token_ids,
                "pad_token_id": handle.pad_token_id, "stop": first.stop, "tokenizer": handle.tokenizer,
            }
            if listening and (req.mode == "sample" or width == 1):
                common["on_token"] = self._dispatch(owners[lo:lo + chunk])
            if req.mode == "sample":
                from .ancestral import sample

                beams += sample(
                    handle.model, part, num_return_sequences=first.returns, temperature=req.temperature,
                    top_p=req.top_p, seeds=seeds[lo:lo + chunk] if seeds else None, **common,
                )
            else:
                from .beam import beam_search

                fn = beam_search if "on_token" in common else pick_beam_fn(handle.device, self.settings.use_cuda_beam)
                beams += fn(handle.model, part, num_beams=width, **common)
        self.stats["batches"] += 1
        self.stats["prompts"] += len(prompts)
        self.stats["generated_tokens"] += sum(len(b.token_ids) for group in beams for b in group)
        out: list[list[list[Beam]]] = []
        at = 0
        for plan in plans:
            out.append(beams[at:at + len(plan.prompt_ids)])
            at += len(plan.prompt_ids)
        return out

    @staticmethod
    def _dispatch(owners: list[tuple[TokenListener | None, int]]) -> TokenListener:
        """A listener for one decoded chunk of prompts that forwards each token to its request's listener."""
        def on_token(row: int, sequence: int, token_id: int, logprob: float) -> None:
            fn, index = owners[row]
            if fn is not None:
                fn(index, sequence, token_id, logprob)

        return on_token

    def respond(self, plan: Plan, handle: models.LoadedModel, beams: list[list[Beam]]) -> GenerateResponse:
        """Trim every beam and build the wire response (candidates best first)."""
        results = []
        for i, group in enumerate(beams):
            cands = []
            for beam in group:
                t = trim(handle.tokenizer, beam.token_ids, beam.token_logprobs, finished=beam.finished,
                         eos_token_ids=handle.eos_token_ids, stop=plan.stop)
                lp = min(0.0, math.fsum(t.token_logprobs))
                cands.append(GeneratedCandidate(
                    text=t.text, token_count=len(t.token_ids), logprob=lp, probability=math.exp(lp),
                    finish_reason="stop" if t.finish_reason == "stop" else "length", token_ids=t.token_ids,
                    token_logprobs=t.token_logprobs if plan.request.token_logprobs else None,
                ))
            cands.sort(key=lambda c: -c.logprob)
            if plan.request.distinct:
                seen: set[tuple[int, ...]] = set()
                unique = []
                for c in cands:
                    if tuple(c.token_ids) not in seen:
                        seen.add(tuple(c.token_ids))
                        unique.append(c)
                cands = unique
            results.append(GenerationResult(prompt_index=i, prompt_token_ids=plan.prompt_ids[i],
                                            candidates=cands[:plan.returns]))
        return GenerateResponse(model=handle.name, checkpoint=handle.checkpoint, weights_version=handle.version,
                                results=results)

    def generate_sync(self, req: GenerateRequest) -> GenerateResponse:
        """Plan, decode and respond in the calling thread (no queue); for scripts and benchmarks."""
        handle = self._handle()
        plan = self.plan(req, handle)
        return self.respond(plan, handle, self.decode(handle, [plan])[0])

    # -- async API -------------------------------------------------------------------------
    def _handle(self) -> models.LoadedModel:
        if self.current is None and self._parked is not None:
            self._unpark()
        if self.current is None:
            raise UnavailableError("the model is not loaded yet")
        return self.current

    def park(self) -> bool:
        """Release the served weights until they are needed again (the embedded ``btp run`` does this while
        it trains in the same process, so the weights are not held twice); the next request reloads the
        same checkpoint from disk, and a swap replaces it. Waits for the batch running now. Only a full model
        on disk is parked (a LoRA merge has no folder of its own); True when the weights were released."""
        with self._swap_lock, self._run_lock:
            cur = self.current
            if cur is None or cur.kind != "full" or not Path(cur.checkpoint).is_dir() or self._pending:
                return False
            self._parked = (cur.checkpoint, cur.name, cur.version, cur.lineage)
            self.current = self._base = None
            del cur
        models.release_memory()
        log.info("released the weights of %s until the next request", self._parked[0])
        return True

    def _unpark(self) -> None:
        with self._swap_lock:
            self._unpark_locked()

    def _unpark_locked(self) -> None:
        if self.current is not None or self._parked is None:
            return
        checkpoint, name, version, lineage = self._parked
        loaded = models.load_folder(Path(checkpoint), device=self.device, dtype=self.dtype, name=name)
        loaded.version, loaded.lineage = version, lineage  # the parked weights' place in their lineage
        self.current = self._base = loaded
        self._parked = None

    def served(self) -> models.LoadedModel:
        """The weights served now (503 before they are loaded)."""
        return self._handle()

    async def generate(
        self, req: GenerateRequest, *, prompt_ids: list[list[int]] | None = None, stop: list[str] | None = None,
    ) -> GenerateResponse:
        """Queue a request for the batcher (any event loop, any thread); 429 when the queue is full.

        ``prompt_ids`` and ``stop`` as in :meth:`plan`.
        """
        if self._thread is None:
            raise UnavailableError("the generator is not started")
        handle = self._handle()
        plan = self.plan(req, handle, prompt_ids=prompt_ids, stop=stop)
        future: Future[list[list[Beam]]] = Future()
        self._submit(_Job(plan, handle, future, plan.key(handle)))
        return self.respond(plan, handle, await asyncio.wrap_future(future))

    def stream(
        self, req: GenerateRequest, *, prompt_ids: list[list[int]] | None = None, stop: list[str] | None = None,
    ) -> TokenStream:
        """Queue a request whose tokens are handed over as they are decoded (call from the event loop that
        reads them); validation and the full queue raise here, before anything is streamed."""
        if self._thread is None:
            raise UnavailableError("the generator is not started")
        handle = self._handle()
        plan = self.plan(req, handle, prompt_ids=prompt_ids, stop=stop)
        stream = TokenStream(self, plan, handle, asyncio.get_running_loop())
        self._submit(_Job(plan, handle, stream.future, plan.key(handle), stream.listen))
        return stream

    def _submit(self, job: _Job) -> None:
        """Count the job against ``max_queue`` (429 beyond) until its future is done, and queue it."""
        with self._lock:
            if self._pending >= self.settings.max_queue:
                raise OverloadedError(f"generation queue is full ({self.settings.max_queue} requests); retry later")
            self._pending += 1
            self.stats["requests"] += 1
        job.future.add_done_callback(self._release)
        self._jobs.put(job)

    def _release(self, _: Future[list[list[Beam]]]) -> None:
        with self._lock:
            self._pending -= 1

    def _fits(self, job: _Job, other: _Job, size: int) -> bool:
        return other.key == job.key and size + len(other.plan.prompt_ids) <= self.settings.max_batch_prompts

    def _worker_loop(self) -> None:
        """The batcher: gather compatible jobs, decode them together, hand out the results."""
        held: deque[_Job | None] = deque()
        while True:
            job = held.popleft() if held else self._jobs.get()
            if job is None:
                return
            self._serve(job, held)
            # nothing of a finished batch stays referenced while the loop waits (its weights may be released)
            del job

    def _serve(self, job: _Job, held: deque[_Job | None]) -> None:
        """Decode ``job`` with whatever compatible jobs are waiting (see :meth:`_worker_loop`)."""
        batch, size = [job], len(job.plan.prompt_ids)
        for other in [h for h in held if h is not None]:  # set aside earlier; oldest first
            if self._fits(job, other, size):
                held.remove(other)
                batch.append(other)
                size += len(other.plan.prompt_ids)
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000.0
        while size < self.settings.max_batch_prompts and (left := deadline - time.monotonic()) > 0:
            try:
                nxt = self._jobs.get(timeout=left)
            except queue.Empty:
                break
            if nxt is not None and self._fits(job, nxt, size):
                batch.append(nxt)
                size += len(nxt.plan.prompt_ids)
            else:
                held.append(nxt)
        with self._run_lock:
            # Whatever arrived while the model was busy joins now (continuous batching).
            while size < self.settings.max_batch_prompts:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is not None and self._fits(job, nxt, size):
                    batch.append(nxt)
                    size += len(nxt.plan.prompt_ids)
                else:
                    held.append(nxt)
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not live:
                return
            try:
                results = self.decode(job.handle, [j.plan for j in live], [j.listener for j in live])
            except Exception as exc:  # hand the failure to every waiting request
                log.exception("generation failed")
                for j in live:
                    j.future.set_exception(exc)
                return
        for j, res in zip(live, results, strict=True):
            j.future.set_result(res)

    def score_sync(
        self, handle: models.LoadedModel, ids: list[int], *, start: int, top: int,
    ) -> list[tuple[float, list[tuple[int, float]]]]:
        """log P(ids[i] | ids[:i]) and the ``top`` most likely tokens there, for i >= ``start`` (one forward pass).

        For prompt log-probabilities (``echo``) and alternatives (``top_logprobs``) of the OpenAI routes;
        it runs while no batch is decoding.
        """
        from .scoring import score_tokens

        with self._run_lock:
            return score_tokens(handle.model, ids, start=start, top=top)

    async def score(
        self, handle: models.LoadedModel, ids: list[int], *, start: int, top: int,
    ) -> list[tuple[float, list[tuple[int, float]]]]:
        """:meth:`score_sync` off the event loop."""
        return await asyncio.to_thread(self.score_sync, handle, ids, start=start, top=top)

    def swap_weights_sync(self, checkpoint: str, version: int | None = None, lineage: str | None = None) -> WeightsResponse:
        """Load ``checkpoint`` beside the served weights, check it, then swap; 4xx leaves the old ones.

        ``version`` and ``lineage`` as in :class:`WeightsRequest`: an older version of the served lineage is
        a :class:`ConflictError` before anything loads.
        """
        with self._swap_lock:
            cur, parked = self.current, self._parked
            if cur is not None:
                previous, served, served_lineage = cur.checkpoint, cur.version, cur.lineage
            elif parked is not None:  # released while the embedded run trains: still the served version
                previous, served, served_lineage = parked[0], parked[2], parked[3]
            else:
                previous, served, served_lineage = None, 0, None
            same_lineage = previous is None or lineage is None or lineage == served_lineage
            if version is None:
                version = served + 1 if same_lineage else 0
            folder = models.resolve_model(checkpoint, self.settings.resolved_model_cache_dir())
            if previous is not None and same_lineage and version <= served:
                if version == served and previous == str(folder):  # a retried publish: nothing to do
                    self._unpark_locked()
                    assert self.current is not None
                    return self._weights_response(self.current, previous, served)
                raise ConflictError(
                    f"weights version {version} is not newer than the served version {served} "
                    f"({previous}); versions only move forward",
                    param="version",
                )
            if self._parked is not None and models.is_adapter(folder):
                self._unpark_locked()  # an adapter goes on the parked full model
            loaded = models.load_folder(folder, device=self.device, dtype=self.dtype,
                                        name=self._name(checkpoint, folder), base=self._base)
            loaded.version = version
            loaded.lineage = lineage if lineage is not None else served_lineage
            if loaded.kind == "full":
                self._base = loaded
            self.current = loaded
            self._parked = None  # one reference assignment: requests already accepted keep the old one
            self.stats["swaps"] += 1
            now = loaded
            del loaded, cur
        models.release_memory()  # the old weights, once no request holds them
        log.info("now serving %s (%s) from %s, version %d", now.name, now.kind, now.checkpoint, version)
        return self._weights_response(now, previous, served)

    @staticmethod
    def _weights_response(loaded: models.LoadedModel, previous: str | None, previous_version: int) -> WeightsResponse:
        return WeightsResponse(model=loaded.name, checkpoint=loaded.checkpoint, kind=loaded.kind,  # type: ignore[arg-type]
                               previous=previous, version=loaded.version, previous_version=previous_version,
                               lineage=loaded.lineage)  # fmt: skip

    async def swap_weights(self, checkpoint: str, version: int | None = None, lineage: str | None = None) -> WeightsResponse:
        """:meth:`swap_weights_sync` off the event loop."""
        return await asyncio.to_thread(self.swap_weights_sync, checkpoint, version, lineage)

    def health(self) -> dict[str, Any]:
        """What /health reports beyond ``status``."""
        cur = self.current
        parked = self._parked
        return {
            "model": cur.name if cur else (parked[1] if parked else None),
            "checkpoint": cur.checkpoint if cur else (parked[0] if parked else None),
            "parked": cur is None and parked is not None,
            "kind": cur.kind if cur else None,
            "weights_version": cur.version if cur else None,
            "lineage": cur.lineage if cur else None,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype is not None else None,
            "queue": self._pending,
            "max_queue": self.settings.max_queue,
        }
