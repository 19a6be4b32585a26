"""Client-side spreading over several generator replicas (one per GPU).

``BTP_GENERATOR_URL`` may name several generators, comma-separated
(``http://127.0.0.1:8001,http://127.0.0.1:8011``); :func:`generator_client` then returns a
:class:`ReplicatedGeneratorClient`, which every caller uses exactly like one :class:`GeneratorClient`:

- ``generate``: the prompts of one request are cut into contiguous, near-equal parts, one per replica
  (fewer parts when there are fewer prompts than replicas; a one-prompt request goes to the replicas in
  turn), sent at the same time, and the results joined back in prompt order (``prompt_index`` renumbered).
  Beam search is deterministic, so the joined answer holds the same programs and log-probabilities as one
  generator would return, up to the float noise of a different batch composition. Sample mode with a
  ``seed`` is reproducible for a fixed number of replicas, not across numbers (each part draws its own
  stream from the same seed).
- ``set_weights``: published to every replica (concurrently); it fails if any replica fails, naming it.
- Versions stay consistent: every part of a ``generate`` answer must come from the same checkpoint, else
  the call fails with :class:`UpstreamError` (a replica that missed a publication must never feed the
  buffer programs attributed to the wrong weights).

No load balancer process is involved: the driver and the trainer (which publishes checkpoints) both
spread on their own, so a replica per GPU needs nothing but its URL in the list
(``btp stack up --generators N`` starts them, one GPU each).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import GeneratorClient
from .errors import BTPError, UpstreamError
from .schemas.generator import GenerateRequest, GenerateResponse, WeightsResponse


def split_urls(urls: str) -> list[str]:
    """The URLs of a comma-separated list, stripped, empty entries dropped."""
    return [u.strip() for u in urls.split(",") if u.strip()]


def spans(n: int, parts: int, first: int = 0) -> list[tuple[int, int, int]]:
    """(replica, start, stop): ``n`` items cut into ``min(n, parts)`` contiguous near-equal spans, the
    first span going to replica ``first`` and the next ones to the replicas after it (cyclically)."""
    used = min(n, parts)
    out = []
    start = 0
    for i in range(used):
        size = n // used + (1 if i < n % used else 0)
        out.append(((first + i) % parts, start, start + size))
        start += size
    return out


class ReplicatedGeneratorClient(GeneratorClient):
    """Several generator replicas behind the interface of one :class:`GeneratorClient`."""

    def __init__(self, replicas: list[GeneratorClient]) -> None:
        if len(replicas) < 2:
            raise ValueError("a replicated client needs at least two replicas")
        self.replicas = replicas
        self.http = replicas[0].http  # what callers may read (base_url, headers) is the first replica's
        self.retry_s = replicas[0].retry_s
        self._turn = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=len(replicas), thread_name_prefix="btp-generator")

    @property
    def urls(self) -> list[str]:
        return [str(r.http.base_url) for r in self.replicas]

    def _each(self, calls: list[tuple[GeneratorClient, Any]]) -> list[Any]:
        """Run ``(replica, fn)`` pairs concurrently; results in order; the first failure re-raised with the
        replica it came from (after every call has finished)."""
        futures = [(r, self._pool.submit(fn)) for r, fn in calls]
        results, failure = [], None
        for replica, fut in futures:
            try:
                results.append(fut.result())
            except Exception as exc:
                if failure is None:
                    failure = (replica, exc)
        if failure is not None:
            replica, error = failure
            if isinstance(error, BTPError):
                error.message = f"generator replica {replica.http.base_url}: {error.message}"
                error.args = (error.message,)
            raise error
        return results

    def generate(self, req: GenerateRequest) -> GenerateResponse:
        """``POST /v1/generate``, the prompts spread over the replicas; results in prompt order."""
        parts = spans(len(req.prompts), len(self.replicas), next(self._turn) % len(self.replicas))
        calls = [
            (self.replicas[r], lambda r=r, a=a, b=b: self.replicas[r].generate(
                req.model_copy(update={"prompts": req.prompts[a:b]})))
            for r, a, b in parts
        ]  # fmt: skip
        answers: list[GenerateResponse] = self._each(calls)
        versions = {(a.model, a.checkpoint) for a in answers}
        if len(versions) > 1:
            served = ", ".join(f"{url} serves {a.checkpoint}" for url, a in
                               zip((str(self.replicas[r].http.base_url) for r, _, _ in parts), answers, strict=True))
            raise UpstreamError(f"generator replicas answered from different weights ({served}); publish the "
                                "checkpoint to every replica (set_weights) before generating")  # fmt: skip
        results = []
        for (_, start, _), answer in zip(parts, answers, strict=True):
            for res in answer.results:
                results.append(res.model_copy(update={"prompt_index": start + res.prompt_index}))
        return answers[0].model_copy(update={"results": results})

    def set_weights(self, checkpoint: str, *, version: int | None = None, lineage: str | None = None) -> WeightsResponse:
        """``POST /v1/weights`` on every replica (the same version and lineage); the first replica's answer."""
        answers: list[WeightsResponse] = self._each(
            [(r, lambda r=r: r.set_weights(checkpoint, version=version, lineage=lineage)) for r in self.replicas]
        )
        if len({a.checkpoint for a in answers}) > 1:
            raise UpstreamError("generator replicas loaded different checkpoints: "
                                + ", ".join(f"{u}: {a.checkpoint}" for u, a in zip(self.urls, answers, strict=True)))
        return answers[0]

    def health(self) -> dict[str, Any]:
        """``GET /health`` of every replica (any failure raises); the first one's answer, plus all."""
        answers: list[dict[str, Any]] = self._each([(r, r.health) for r in self.replicas])
        return {**answers[0], "replicas": [{"url": u, **a} for u, a in zip(self.urls, answers, strict=True)]}

    def close(self) -> None:
        for r in self.replicas:
            r.close()
        self._pool.shutdown(wait=False)


def generator_client(url: str, **kwargs: Any) -> GeneratorClient:
    """A client for ``url``: one generator, or several spread over when ``url`` is a comma-separated list
    (``kwargs`` go to each replica's :class:`GeneratorClient`)."""
    urls = split_urls(url)
    if len(urls) <= 1:
        return GeneratorClient(urls[0] if urls else url, **kwargs)
    return ReplicatedGeneratorClient([GeneratorClient(u, **kwargs) for u in urls])
