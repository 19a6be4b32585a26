"""Where the sampled programs come from: the student's own generator, or a teacher.

A sampler returns, for each task, up to k candidates with the log-probability of their tokens:
- :class:`GeneratorSampler`: a BTP generator (the student's, or a stronger one at another URL), beam search.
- :class:`OpenAISampler`: an OpenAI-compatible endpoint (``/completions`` for raw prompts with
  ``logprobs``, ``/chat/completions`` with ``logprobs: true`` for chat), ``n = k`` samples per prompt.
- :class:`JsonlSampler`: a file of programs, one JSON object a line:
  ``{"task_id": "...", "program": "...", "logprob": -12.3, "token_count": 57}``; logprob and token_count
  are optional. A program without a logprob gets ``logprob = 0`` (possibility 1), so only its pass rate
  tells it apart from the others; the buffer's ``beam_softmax`` then shares the mass evenly in its task.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from services.common.client import GeneratorClient
from services.common.errors import UpstreamError, ValidationError
from services.common.schemas.buffer import TaskIn
from services.common.schemas.generator import GenerateRequest, PromptFormat

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Candidate:
    """One sampled program t with log P(t)."""

    text: str
    logprob: float
    token_count: int


class Sampler(Protocol):
    """Top-k programs per task."""

    source: str

    def sample(self, tasks: list[TaskIn], k: int) -> list[list[Candidate]]: ...


def extract_code(answer: str) -> str:
    """The first fenced code block of a chat answer, else the answer itself."""
    match = _FENCE.search(answer)
    return match.group(1) if match else answer


class GeneratorSampler:
    """Beam search on a BTP generator."""

    def __init__(
        self,
        client: GeneratorClient,
        *,
        source: str,
        max_new_tokens: int,
        stop: list[str],
        prompt_format: PromptFormat,
        batch: int,
    ) -> None:
        self.client, self.source = client, source
        self.max_new_tokens, self.stop, self.prompt_format, self.batch = max_new_tokens, stop, prompt_format, batch

    def sample(self, tasks: list[TaskIn], k: int) -> list[list[Candidate]]:
        req = GenerateRequest(
            prompts=[t.prompt for t in tasks],
            mode="beam",
            num_beams=k,
            num_return_sequences=k,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            prompt_format=self.prompt_format,
        )
        resp = self.client.generate(req)
        out: list[list[Candidate]] = [[] for _ in tasks]
        for result in resp.results:
            out[result.prompt_index] = [Candidate(c.text, c.logprob, c.token_count) for c in result.candidates]
        return out


class OpenAISampler:
    """n samples per prompt from an OpenAI-compatible endpoint, with token log-probabilities."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_new_tokens: int,
        stop: list[str],
        prompt_format: PromptFormat,
        api_key_env: str = "OPENAI_API_KEY",
        http: httpx.Client | None = None,
    ) -> None:
        key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=600.0)
        self.model, self.max_new_tokens, self.stop, self.prompt_format = model, max_new_tokens, stop, prompt_format
        self.source = f"openai:{model}"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post(path, json=body)
        if resp.status_code >= 400:
            raise UpstreamError(f"teacher endpoint {path} answered {resp.status_code}: {resp.text[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    def _one(self, prompt: str, k: int) -> list[Candidate]:
        body: dict[str, Any] = {"model": self.model, "n": k, "max_tokens": self.max_new_tokens, "temperature": 1.0}
        if self.stop:
            body["stop"] = self.stop[:4]  # the OpenAI API takes at most 4 stop sequences
        if self.prompt_format == "chat":
            body |= {"messages": [{"role": "user", "content": prompt}], "logprobs": True}
            choices = self._post("/chat/completions", body).get("choices", [])
            cands = []
            for ch in choices:
                lps = [float(t["logprob"]) for t in ((ch.get("logprobs") or {}).get("content") or [])]
                text = extract_code(str((ch.get("message") or {}).get("content") or ""))
                cands.append(Candidate(text, min(0.0, sum(lps)), len(lps)))
        else:
            body |= {"prompt": prompt, "logprobs": 1}
            choices = self._post("/completions", body).get("choices", [])
            cands = []
            for ch in choices:
                lps = [float(x) for x in ((ch.get("logprobs") or {}).get("token_logprobs") or []) if x is not None]
                cands.append(Candidate(str(ch.get("text") or ""), min(0.0, sum(lps)), len(lps)))
        return sorted(cands, key=lambda c: c.logprob, reverse=True)[:k]

    def sample(self, tasks: list[TaskIn], k: int) -> list[list[Candidate]]:
        return [self._one(t.prompt, k) for t in tasks]


class JsonlSampler:
    """Programs read from a JSONL file, grouped by task id, best log-probability first."""

    def __init__(self, path: Path, *, source: str | None = None) -> None:
        self.source = source or f"jsonl:{path.name}"
        self.by_task: dict[str, list[Candidate]] = defaultdict(list)
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    program = rec["program"]
                    task_id = rec["task_id"]
                    logprob = min(0.0, float(rec.get("logprob", 0.0)))
                    count = int(rec.get("token_count", len(str(program).split())))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ValidationError(f"{path.name}:{lineno}: bad teacher record ({exc})", param="teacher") from exc
                self.by_task[str(task_id)].append(Candidate(str(program), logprob, max(0, count)))

    def sample(self, tasks: list[TaskIn], k: int) -> list[list[Candidate]]:
        return [sorted(self.by_task.get(t.id, []), key=lambda c: c.logprob, reverse=True)[:k] for t in tasks]
