"""Algorithm 1 of the paper, over the four services' clients (no FastAPI, no torch here).

```
eval:0                               greedy program per held-out task -> pass rate, accuracy
for r in 1..R:
  sample:r   beam search (k programs per train task, with P(t)) -> POST /v1/experiences
  judge:r    every unjudged program -> POST /v1/judge/batch -> PATCH /v1/experiences/{id}
  train:r    trainer job on PPER minibatches (POST /v1/sample inside) -> checkpoint
             -> POST /v1/weights on the generator (the student now serves the new weights)
  eval:r
```
Each step is recorded in the run folder when it finishes; a resumed run skips finished steps and the
buffer deduplicates re-sent experiences, so a crash in the middle of a step loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.common.client import BufferClient, GeneratorClient, JudgeClient
from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate, SampleRequest, TaskIn
from services.common.schemas.generator import GenerateRequest
from services.common.schemas.judge import JudgeRequest, JudgeResponse, Limits
from services.common.schemas.trainer import JobCreate

from ..datasets.loaders import assemble_program, load_dataset, select
from .config import RunConfig
from .folder import RunFolder
from .metrics import TaskOutcome, histogram, summarize
from .samplers import Sampler

JUDGE_CHUNK = 64
UPSERT_CHUNK = 500


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
    """Runs one fine-tuning job to the end and returns the checkpoint it wrote."""

    def train(self, job: JobCreate, *, round_: int, reporter: Reporter) -> tuple[str, list[dict[str, Any]]]: ...


@dataclass
class Services:
    """The clients the driver talks to."""

    generator: GeneratorClient
    judge: JudgeClient
    buffer: BufferClient
    trainer: Trainer
    mode: str = "embedded"


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_tasks(cfg: RunConfig, mbpp_path: str | None = None) -> tuple[list[TaskIn], list[TaskIn]]:
    """The run's train and test slices, per data set, deterministic."""
    train: list[TaskIn] = []
    test: list[TaskIn] = []
    for name in cfg.datasets:
        raw = cfg.dataset_paths.get(name) or (mbpp_path if name == "mbpp" else None)
        result = load_dataset(name, Path(raw) if raw else None, test_fraction=cfg.test_fraction)
        train += select(result.tasks, "train", cfg.train_size)
        test += select(result.tasks, "test", cfg.test_size)
    if not train or not test:
        raise ValueError(f"the data set slice is empty: {len(train)} train and {len(test)} held-out tasks")
    return train, test


class Pipeline:
    """One run of Algorithm 1 against a set of services."""

    def __init__(
        self,
        cfg: RunConfig,
        folder: RunFolder,
        services: Services,
        *,
        sampler: Sampler | None = None,
        reporter: Reporter | None = None,
        mbpp_path: str | None = None,
        tasks: tuple[list[TaskIn], list[TaskIn]] | None = None,
    ) -> None:
        self.cfg, self.folder, self.svc = cfg, folder, services
        self.reporter = reporter or SilentReporter()
        self.sampler = sampler
        self.train_tasks, self.test_tasks = tasks or load_tasks(cfg, mbpp_path)
        self.tasks = {t.id: t for t in self.train_tasks + self.test_tasks}
        self.limits = Limits(time_s=cfg.judge_time_s, memory_mb=cfg.judge_memory_mb)

    # --- steps -------------------------------------------------------------------------------

    def upload_tasks(self) -> None:
        """Upsert the run's tasks into the buffer (idempotent)."""
        tasks = self.train_tasks + self.test_tasks
        for part in chunks(tasks, UPSERT_CHUNK):
            self.svc.buffer.upsert_tasks(part)

    def served_source(self) -> str:
        """The source label of programs sampled from the student now: model@checkpoint."""
        checkpoint = self.folder.state().checkpoint or "base"
        return f"{self.cfg.model}@{checkpoint}"

    def _generate(self, tasks: list[TaskIn], *, mode: str, k: int) -> list[list[Any]]:
        req = GenerateRequest(
            prompts=[t.prompt for t in tasks],
            mode=mode,  # type: ignore[arg-type]
            num_beams=k,
            num_return_sequences=k,
            max_new_tokens=self.cfg.max_new_tokens,
            stop=self.cfg.stops(),
            prompt_format=self.cfg.prompt_format,
        )
        resp = self.svc.generator.generate(req)
        out: list[list[Any]] = [[] for _ in tasks]
        for result in resp.results:
            out[result.prompt_index] = list(result.candidates)
        return out

    def sample_round(self, round_: int) -> int:
        """Beam search sampling of k programs per train task, stored in the buffer (Eq. 1-3)."""
        self.reporter.phase(f"round {round_}: beam search (k={self.cfg.k})", len(self.train_tasks))
        stored = 0
        for part in chunks(self.train_tasks, self.cfg.gen_batch):
            if self.sampler is not None:
                source = self.sampler.source
                per_task = [
                    [(c.text, c.logprob, c.token_count) for c in cands] for cands in self.sampler.sample(part, self.cfg.k)
                ]
            else:
                source = self.served_source()
                per_task = [
                    [(c.text, c.logprob, c.token_count) for c in cands]
                    for cands in self._generate(part, mode="beam", k=self.cfg.k)
                ]
            items = [
                ExperienceIn(
                    task_id=task.id,
                    program=text,
                    logprob=min(0.0, logprob),
                    token_count=count,
                    source=source,
                    round=round_,
                    generation=f"{task.id}#r{round_}",
                )
                for task, cands in zip(part, per_task, strict=True)
                for text, logprob, count in cands
            ]
            if items:
                stored += self.svc.buffer.add_experiences(items).created
            self.reporter.advance(len(part))
        return stored

    def _task(self, task_id: str) -> TaskIn:
        if task_id not in self.tasks:
            out = self.svc.buffer.get_task(task_id)
            self.tasks[task_id] = TaskIn.model_validate(out.model_dump(exclude={"created_at", "updated_at"}))
        return self.tasks[task_id]

    def _judge_programs(self, pairs: list[tuple[TaskIn, str]]) -> list[JudgeResponse]:
        reqs = [
            JudgeRequest(program=assemble_program(t.prompt, prog, t.metadata), tests=t.tests, limits=self.limits)
            for t, prog in pairs
        ]
        return self.svc.judge.judge_batch(reqs).results if reqs else []

    def judge_round(self, round_: int) -> int:
        """Testing: run every unjudged program of the run's train tasks, store pass rates (Eq. 4-5)."""
        pending = []
        for task in self.train_tasks:
            pending += self.svc.buffer.list_experiences(task_id=task.id, judged=False, limit=1000).items
        self.reporter.phase(f"round {round_}: judging {len(pending)} programs", len(pending))
        for part in chunks(pending, JUDGE_CHUNK):
            results = self._judge_programs([(self._task(e.task_id), e.program) for e in part])
            for exp, res in zip(part, results, strict=True):
                summary = {"verdict": res.verdict, "passed": res.passed, "total": res.total,
                           "statuses": [c.status for c in res.cases]}  # fmt: skip
                self.svc.buffer.update_experience(exp.id, ExperienceUpdate(pass_rate=res.pass_rate, judge=summary))
            self.reporter.advance(len(part))
        return len(pending)

    def sample_request(self, round_: int) -> SampleRequest:
        """The PPER request of a round (Eq. 6-8), limited to the run's data sets' train split."""
        return SampleRequest(
            n=self.cfg.n,
            scheme=self.cfg.scheme,
            alpha=self.cfg.alpha,
            priority_exponent=self.cfg.priority_exponent,
            possibility=self.cfg.possibility,
            dataset=self.cfg.datasets[0] if len(self.cfg.datasets) == 1 else None,
            split="train",
            seed=self.cfg.seed * 1000 + round_,
        )

    def job(self, round_: int) -> JobCreate:
        """The fine-tuning job of a round: continue from the weights served now."""
        state = self.folder.state()
        return JobCreate(
            model=state.checkpoint or self.cfg.model,
            batch_size=self.cfg.n,
            steps=self.cfg.steps,
            learning_rate=self.cfg.learning_rate,
            lora=self.cfg.lora,
            lora_r=self.cfg.lora_r,
            max_seq_len=self.cfg.max_seq_len,
            prompt_format=self.cfg.prompt_format,
            checkpoint_every=max(1, self.cfg.steps),
            seed=self.cfg.seed + round_,
            sample=self.sample_request(round_),
            publish_to_generator=False,
        )

    def replay_snapshot(self, round_: int) -> dict[str, Any]:
        """What PPER draws versus what is stored: for the report's sampled-vs-stored plots."""
        req = self.sample_request(round_).model_copy(update={"n": max(256, self.cfg.n), "seed": 10_000 + round_})
        sampled = self.svc.buffer.sample(req)
        stored = []
        for task in self.train_tasks:
            stored += [e for e in self.svc.buffer.list_experiences(task_id=task.id, limit=1000).items]
        return {
            "sampled": {
                "pass_rate": histogram([i.pass_rate or 0.0 for i in sampled.items]),
                "p2value": histogram([i.p2value for i in sampled.items]),
            },
            "stored": {"pass_rate": histogram([e.pass_rate or 0.0 for e in stored]), "count": len(stored)},
            "population": sampled.population,
        }

    def train_round(self, round_: int) -> str:
        """PPER fine-tuning, then publish the checkpoint to the generator."""
        job = self.job(round_)
        checkpoint, losses = self.svc.trainer.train(job, round_=round_, reporter=self.reporter)
        self.svc.generator.set_weights(checkpoint)
        self.folder.save_metrics(round_, {"train": {"checkpoint": checkpoint, "loss_history": losses}})
        return checkpoint

    def evaluate(self, round_: int) -> dict[str, Any]:
        """Greedy program per held-out task, judged: pass rate and accuracy (overall, per difficulty)."""
        self.reporter.phase(f"evaluation after round {round_}" if round_ else "evaluation before training",
                            len(self.test_tasks))  # fmt: skip
        outcomes: list[TaskOutcome] = []
        for part in chunks(self.test_tasks, self.cfg.gen_batch):
            greedy = self._generate(part, mode="greedy", k=1)
            pairs = [(t, cands[0].text if cands else "") for t, cands in zip(part, greedy, strict=True)]
            for (task, _), res in zip(pairs, self._judge_programs(pairs), strict=True):
                outcomes.append(TaskOutcome(task.id, task.dataset, task.difficulty, res.pass_rate,
                                            res.total > 0 and res.passed == res.total))  # fmt: skip
            self.reporter.advance(len(part))
        summary = summarize(outcomes)
        summary["per_task"] = {o.task_id: o.pass_rate for o in outcomes}
        return summary

    # --- the loop ----------------------------------------------------------------------------

    def _step(self, step: str, round_: int, fn: Any) -> None:
        if self.folder.is_done(step):
            return
        start = time.perf_counter()
        result = fn(round_)
        seconds = time.perf_counter() - start
        kind = step.split(":")[0]
        update: dict[str, Any] = {f"{kind}_seconds": round(seconds, 2)}
        if kind == "eval":
            update["eval"] = result
        elif kind == "train":
            self.folder.mark(step, checkpoint=str(result))
            self.folder.save_metrics(round_, update)
            return
        else:
            update[f"{kind}_count"] = result
        self.folder.save_metrics(round_, update)
        self.folder.mark(step)

    def run(self) -> list[dict[str, Any]]:
        """Run (or resume) every round; returns the per-round metrics."""
        self.upload_tasks()
        checkpoint = self.folder.state().checkpoint
        if checkpoint:
            self.reporter.log(f"resuming: the generator serves {checkpoint}")
            self.svc.generator.set_weights(checkpoint)
        self._step("eval:0", 0, self.evaluate)
        for r in range(1, self.cfg.rounds + 1):
            self._step(f"sample:{r}", r, self.sample_round)
            self._step(f"judge:{r}", r, self.judge_round)
            if not self.folder.is_done(f"train:{r}"):
                self.folder.save_metrics(r, {"replay": self.replay_snapshot(r),
                                             "buffer": self.svc.buffer.stats().model_dump(mode="json")})  # fmt: skip
            self._step(f"train:{r}", r, self.train_round)
            self._step(f"eval:{r}", r, self.evaluate)
        state = self.folder.state()
        state.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.folder.save_state(state)
        return self.folder.metrics()
