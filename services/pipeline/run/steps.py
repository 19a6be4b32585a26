"""The steps of Algorithm 1 over the services' clients, one implementation for `btp run`, `btp sweep`
and `btp experiment`.

```
generate        prompts -> POST /v1/generate (beam / sample / greedy) -> candidates per task
store           candidates -> ExperienceIn items (X, t, P(t)) -> POST /v1/experiences      (Eq. 1-3)
judge_pending   unjudged programs of some tasks -> POST /v1/judge/batch -> PATCH pass rates (Eq. 4-5)
sample_request  a ReplayRule + minibatch size + scope -> the PPER request                   (Eq. 6-8)
training_job    the fine-tuning job of a round, through a :class:`Trainer` (in-process or remote)
evaluate        greedy program per held-out task, judged -> pass rate and accuracy
```
No FastAPI, no torch here: the callers pass clients, so the same step runs embedded or against the full
stack. Seeds have one formula each (:func:`sample_seed`, :func:`job_seed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.client import BufferClient, GeneratorClient, JudgeClient
from services.common.prompts import RAW_STOP
from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate, ReplayRule, SampleRequest, TaskIn
from services.common.schemas.generator import GeneratedCandidate as Candidate
from services.common.schemas.generator import GenerateRequest, PromptFormat
from services.common.schemas.judge import JudgeRequest, JudgeResponse, Limits
from services.common.schemas.trainer import JobCreate

from ..datasets.loaders import assemble_program
from .metrics import TaskOutcome, summarize

JUDGE_CHUNK = 64
UPSERT_CHUNK = 500
LIST_LIMIT = 1000

Progress = Callable[[int], None]


def _no_progress(n: int) -> None:
    pass


class Reporter(Protocol):
    """Progress sink (rich bars in the CLI, silent in tests)."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def log(self, message: str) -> None: ...


class SilentReporter:
    """A reporter that prints nothing."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class Trainer(Protocol):
    """Runs one fine-tuning job to the end and returns the checkpoint it wrote and its loss history.

    ``label`` names the job's checkpoint folder where the trainer chooses it (in-process training).
    """

    def train(
        self, job: JobCreate, *, round_: int, reporter: Reporter, label: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]: ...


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def default_stops(prompt_format: str) -> list[str]:
    """The stop sequences a run sends: :data:`RAW_STOP` for raw prompts; chat relies on the generator's
    closing fence and chat defaults."""
    return list(RAW_STOP) if prompt_format == "raw" else []


def sample_seed(seed: int, round_: int) -> int:
    """Seed of a round's PPER draws."""
    return seed * 1000 + round_


def job_seed(seed: int, round_: int) -> int:
    """Seed of a round's fine-tuning job."""
    return seed + 1000 * (round_ - 1)


@dataclass(frozen=True)
class Generation:
    """How programs are generated: what a generate request carries besides the prompts."""

    max_new_tokens: int
    prompt_format: PromptFormat
    stop: list[str] | None = None  # None: :func:`default_stops` of the format
    temperature: float = 1.0
    batch: int = 8

    def request(self, prompts: list[str], *, mode: str, k: int, seed: int | None = None) -> GenerateRequest:
        """The generate request of ``prompts``."""
        return GenerateRequest(
            prompts=prompts,
            mode=mode,  # type: ignore[arg-type]
            num_beams=k,
            num_return_sequences=k,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop if self.stop is not None else default_stops(self.prompt_format),
            seed=seed,
            temperature=self.temperature,
            prompt_format=self.prompt_format,
        )


def generate(
    generator: GeneratorClient, tasks: list[TaskIn], gen: Generation, *, mode: str, k: int, seed: int | None = None
) -> list[list[Candidate]]:
    """The candidates of one generate call, per task in order (an empty list where none came back)."""
    resp = generator.generate(gen.request([t.prompt for t in tasks], mode=mode, k=k, seed=seed))
    out: list[list[Candidate]] = [[] for _ in tasks]
    for result in resp.results:
        out[result.prompt_index] = list(result.candidates)
    return out


def experiences(
    tasks: list[TaskIn],
    per_task: list[list[tuple[str, float, int]]],
    *,
    source: str,
    round_: int,
    generation: Callable[[TaskIn], str],
    weights_version: int | None = None,
) -> list[ExperienceIn]:
    """(text, logprob, token_count) candidates of each task as buffer items (unjudged), sampled by the
    weights of ``weights_version`` (when known).

    A program holding a NUL character is dropped: it cannot be Python source (CPython refuses it) and the
    buffer refuses to store it (PostgreSQL cannot); sampled byte tokens of a small model do produce them.
    """
    return [
        ExperienceIn(
            task_id=task.id,
            program=text,
            logprob=min(0.0, logprob),
            token_count=count,
            source=source,
            round=round_,
            generation=generation(task),
            weights_version=weights_version,
        )
        for task, cands in zip(tasks, per_task, strict=True)
        for text, logprob, count in cands
        if "\0" not in text
    ]


def judge_summary(res: JudgeResponse) -> dict[str, Any]:
    """What the buffer keeps of a verdict beside the pass rate."""
    return {"verdict": res.verdict, "passed": res.passed, "total": res.total,
            "statuses": [c.status for c in res.cases]}  # fmt: skip


def judge_programs(judge: JudgeClient, pairs: list[tuple[TaskIn, str]], limits: Limits) -> list[JudgeResponse]:
    """Verdicts of (task, program) pairs, in order; the program runs as ``prompt + program`` when it
    completes the prompt (:func:`assemble_program`)."""
    out: list[JudgeResponse] = []
    for part in chunks(pairs, JUDGE_CHUNK):
        reqs = [
            JudgeRequest(program=assemble_program(t.prompt, prog, t.metadata), tests=t.tests, limits=limits)
            for t, prog in part
        ]
        out += judge.judge_batch(reqs).results
    return out


def stored(buffer: BufferClient, tasks: list[TaskIn], *, judged: bool | None = None) -> list[Any]:
    """The buffer's experiences of ``tasks`` (``judged`` filters)."""
    out: list[Any] = []
    for task in tasks:
        if judged is None:
            out += buffer.list_experiences(task_id=task.id, limit=LIST_LIMIT).items
        else:
            out += buffer.list_experiences(task_id=task.id, judged=judged, limit=LIST_LIMIT).items
    return out


def judge_pending(
    buffer: BufferClient,
    judge: JudgeClient,
    tasks: list[TaskIn],
    limits: Limits,
    *,
    on_start: Callable[[int], None] | None = None,
    progress: Progress = _no_progress,
) -> int:
    """Testing: run every unjudged program of ``tasks`` and store its pass rate (Eq. 4-5)."""
    by_id = {t.id: t for t in tasks}
    pending = stored(buffer, tasks, judged=False)
    if on_start is not None:
        on_start(len(pending))
    for part in chunks(pending, JUDGE_CHUNK):
        results = judge_programs(judge, [(by_id[e.task_id], e.program) for e in part], limits)
        for exp, res in zip(part, results, strict=True):
            buffer.update_experience(exp.id, ExperienceUpdate(pass_rate=res.pass_rate, judge=judge_summary(res)))
        progress(len(part))
    return len(pending)


def judged_items(judge: JudgeClient, tasks: list[TaskIn], items: list[ExperienceIn], limits: Limits) -> list[ExperienceIn]:
    """``items`` with their pass rates (for programs judged before they are stored)."""
    by_id = {t.id: t for t in tasks}
    results = judge_programs(judge, [(by_id[e.task_id], e.program) for e in items], limits)
    return [
        e.model_copy(update={"pass_rate": res.pass_rate, "judge": judge_summary(res)})
        for e, res in zip(items, results, strict=True)
    ]


@dataclass
class Evaluation:
    """Greedy programs of held-out tasks, judged."""

    outcomes: list[TaskOutcome]
    programs: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """Pass rate and accuracy overall, per data set and per difficulty (:func:`.metrics.summarize`)."""
        return summarize(self.outcomes)


def evaluate(
    generator: GeneratorClient,
    judge: JudgeClient,
    tasks: list[TaskIn],
    gen: Generation,
    limits: Limits,
    *,
    progress: Progress = _no_progress,
) -> Evaluation:
    """Greedy program per held-out task, judged."""
    outcomes: list[TaskOutcome] = []
    programs: dict[str, str] = {}
    for part in chunks(tasks, gen.batch):
        greedy = generate(generator, part, gen, mode="greedy", k=1)
        pairs = [(t, cands[0].text if cands else "") for t, cands in zip(part, greedy, strict=True)]
        for (task, text), res in zip(pairs, judge_programs(judge, pairs, limits), strict=True):
            outcomes.append(TaskOutcome(task.id, task.dataset, task.difficulty, res.pass_rate,
                                        res.total > 0 and res.passed == res.total))  # fmt: skip
            programs[task.id] = text
        progress(len(part))
    return Evaluation(outcomes, programs)


def sample_request(rule: ReplayRule, *, n: int, datasets: list[str] | None, seed: int) -> SampleRequest:
    """The PPER request (Eq. 6-8) of a replay rule over the train split of ``datasets`` (None: every data set
    of the buffer, for buffers that hold one experiment's tasks only)."""
    return SampleRequest(
        n=n, **rule.replay_rule().model_dump(), datasets=datasets, split="train", seed=seed
    )


def training_job(
    *,
    model: str,
    sample: SampleRequest,
    steps: int,
    learning_rate: float,
    lora: bool,
    lora_r: int | None = None,
    max_seq_len: int,
    prompt_format: PromptFormat,
    seed: int,
) -> JobCreate:
    """A fine-tuning job on PPER minibatches of ``sample`` (one checkpoint at the end)."""
    return JobCreate(
        model=model,
        batch_size=sample.n,
        steps=steps,
        learning_rate=learning_rate,
        lora=lora,
        lora_r=JobCreate.model_fields["lora_r"].default if lora_r is None else lora_r,
        max_seq_len=max_seq_len,
        prompt_format=prompt_format,
        checkpoint_every=max(1, steps),
        seed=seed,
        sample=sample,
        publish_to_generator=False,
    )
