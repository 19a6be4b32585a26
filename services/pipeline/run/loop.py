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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.client import BufferClient, GeneratorClient, JudgeClient
from services.common.schemas.buffer import SampleRequest, TaskIn
from services.common.schemas.judge import Limits
from services.common.schemas.trainer import JobCreate

from ..datasets.loaders import CODEIO, load_dataset, select
from . import steps
from .config import RunConfig
from .folder import RunFolder
from .metrics import histogram
from .progress import FolderReporter
from .samplers import Sampler
from .steps import Reporter, SilentReporter, Trainer

__all__ = ["Pipeline", "Reporter", "Services", "SilentReporter", "Trainer", "load_tasks"]


@dataclass
class Services:
    """The clients the driver talks to."""

    generator: GeneratorClient
    judge: JudgeClient
    buffer: BufferClient
    trainer: Trainer
    mode: str = "embedded"


def _codeio_tasks(cfg: RunConfig, raw: str | None) -> list[TaskIn]:
    from ..datasets.codeio.importer import load_run_slice
    from ..datasets.codeio.records import CodeIODataError

    if raw is None:
        raise ValueError("codeio is not available offline: give its file with --dataset-path codeio=FILE")
    try:
        return load_run_slice(Path(raw), test_fraction=cfg.test_fraction, train_size=cfg.train_size,
                              test_size=cfg.test_size)  # fmt: skip
    except CodeIODataError as exc:
        raise ValueError(f"codeio: {exc}") from exc


def load_tasks(cfg: RunConfig, mbpp_path: str | None = None) -> tuple[list[TaskIn], list[TaskIn]]:
    """The run's train and test slices, per data set, deterministic."""
    train: list[TaskIn] = []
    test: list[TaskIn] = []
    for name in cfg.datasets:
        raw = cfg.dataset_paths.get(name) or (mbpp_path if name == "mbpp" else None)
        if name == CODEIO:
            tasks = _codeio_tasks(cfg, raw)
        else:
            tasks = load_dataset(name, Path(raw) if raw else None, test_fraction=cfg.test_fraction).tasks
        train += select(tasks, "train", cfg.train_size)
        test += select(tasks, "test", cfg.test_size)
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
        progress: FolderReporter | None = None,
    ) -> None:
        self.cfg, self.folder, self.svc = cfg, folder, services
        where = getattr(folder, "path", None)  # a Pipeline built without a folder (tests) records nothing
        if progress is None:  # else the caller's, started before the services (see cli.main.execute)
            progress = FolderReporter(SilentReporter(), where / "progress.json" if where else None)
        progress.inner = reporter or SilentReporter()
        self.progress = progress
        self.reporter: Reporter = self.progress  # also writes <run>/progress.json for btp dashboard
        self.sampler = sampler
        self.train_tasks, self.test_tasks = tasks or load_tasks(cfg, mbpp_path)
        self.limits = Limits(time_s=cfg.judge_time_s, memory_mb=cfg.judge_memory_mb)
        self.gen = steps.Generation(max_new_tokens=cfg.max_new_tokens, prompt_format=cfg.prompt_format,
                                    stop=cfg.stops(), batch=cfg.gen_batch)  # fmt: skip

    # --- steps -------------------------------------------------------------------------------

    def upload_tasks(self) -> None:
        """Upsert the run's tasks into the buffer (idempotent)."""
        for part in steps.chunks(self.train_tasks + self.test_tasks, steps.UPSERT_CHUNK):
            self.svc.buffer.upsert_tasks(part)

    def served_source(self) -> str:
        """The source label of programs sampled from the student now: model@checkpoint."""
        checkpoint = self.folder.state().checkpoint or "base"
        return f"{self.cfg.model}@{checkpoint}"

    def sample_round(self, round_: int) -> int:
        """Beam search sampling of k programs per train task, stored in the buffer (Eq. 1-3)."""
        self.reporter.phase(f"round {round_}: beam search (k={self.cfg.k})", len(self.train_tasks))
        stored = 0
        for part in steps.chunks(self.train_tasks, self.cfg.gen_batch):
            if self.sampler is not None:
                source = self.sampler.source
                cands: list[list[Any]] = self.sampler.sample(part, self.cfg.k)
            else:
                source = self.served_source()
                cands = steps.generate(self.svc.generator, part, self.gen, mode="beam", k=self.cfg.k)
            per_task = [[(c.text, c.logprob, c.token_count) for c in task_cands] for task_cands in cands]
            items = steps.experiences(part, per_task, source=source, round_=round_,
                                      generation=lambda t: f"{t.id}#r{round_}")  # fmt: skip
            if items:
                stored += self.svc.buffer.add_experiences(items).created
            self.reporter.advance(len(part))
        return stored

    def judge_round(self, round_: int) -> int:
        """Testing: run every unjudged program of the run's train tasks, store pass rates (Eq. 4-5)."""
        return steps.judge_pending(
            self.svc.buffer, self.svc.judge, self.train_tasks, self.limits,
            on_start=lambda n: self.reporter.phase(f"round {round_}: judging {n} programs", n),
            progress=self.reporter.advance,
        )  # fmt: skip

    def sample_request(self, round_: int) -> SampleRequest:
        """The PPER request of a round (Eq. 6-8), limited to the train split of the run's own data sets."""
        return steps.sample_request(self.cfg, n=self.cfg.n, datasets=list(self.cfg.datasets),
                                    seed=steps.sample_seed(self.cfg.seed, round_))  # fmt: skip

    def job(self, round_: int) -> JobCreate:
        """The fine-tuning job of a round: continue from the weights served now."""
        cfg = self.cfg
        return steps.training_job(
            model=self.folder.state().checkpoint or cfg.model, sample=self.sample_request(round_), steps=cfg.steps,
            learning_rate=cfg.learning_rate, lora=cfg.lora, lora_r=cfg.lora_r, max_seq_len=cfg.max_seq_len,
            prompt_format=cfg.prompt_format, seed=steps.job_seed(cfg.seed, round_),
        )  # fmt: skip

    def replay_snapshot(self, round_: int) -> dict[str, Any]:
        """What PPER draws versus what is stored: for the report's sampled-vs-stored plots."""
        req = self.sample_request(round_).model_copy(update={"n": max(256, self.cfg.n), "seed": 10_000 + round_})
        sampled = self.svc.buffer.sample(req)
        stored = steps.stored(self.svc.buffer, self.train_tasks)
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
        checkpoint, losses = self.svc.trainer.train(self.job(round_), round_=round_, reporter=self.reporter)
        self.svc.generator.set_weights(checkpoint)
        self.folder.save_metrics(round_, {"train": {"checkpoint": checkpoint, "loss_history": losses}})
        return checkpoint

    def evaluate(self, round_: int) -> dict[str, Any]:
        """Greedy program per held-out task, judged: pass rate and accuracy (overall, per difficulty)."""
        self.reporter.phase(f"evaluation after round {round_}" if round_ else "evaluation before training",
                            len(self.test_tasks))  # fmt: skip
        ev = steps.evaluate(self.svc.generator, self.svc.judge, self.test_tasks, self.gen, self.limits,
                            progress=self.reporter.advance)  # fmt: skip
        summary = ev.summary()
        summary["per_task"] = {o.task_id: o.pass_rate for o in ev.outcomes}
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
        """Run (or resume) every round; returns the per-round metrics. ``progress.json`` says how it ended."""
        with self.progress.running():
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
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
