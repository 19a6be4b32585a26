"""`btp experiment`: the paper's experiments at small scale, sharing every piece of work that can be shared.

(Over 500 lines on purpose: the one class holds the phase graph of an experiment and its resume
bookkeeping; the steps themselves are :mod:`services.pipeline.run.steps`, the recipes :mod:`.recipes`.)

```
tasks        train slice (MBPP train split) and held-out slice (MBPP test split, never trained on)
sample:beam  beam search, k programs per train task, base weights  -> buffer-beam.sqlite3
sample:sample  ancestral sampling, same k                          -> buffer-sample.sqlite3
teacher      reference programs of a stronger source (HumanEval canonical solutions of its train split)
                                                                    -> buffer-teacher.sqlite3
judge        every stored program, once (the judge's real sandbox)
passing      the beam buffer's programs with pass_rate == 1         -> buffer-passing.sqlite3 (rejection sampling)
failed       the beam buffer's programs with pass_rate < 1          -> buffer-failed.sqlite3 (failed programs only)
eval:base    greedy program per held-out task, judged
variant/seed fine-tune the *base* model from one buffer with one replay rule, same steps / n / lr for all,
             then greedy evaluation on the same held-out tasks; the checkpoint is deleted afterwards
summary      pass rate and accuracy with bootstrap CIs over seeds and tasks, paired change against the base
```
With ``dataset`` codeio the tasks are imported once from ``dataset_path`` through the judge's sandbox (in
``judge_environment`` when set) and kept in ``<out>/tasks.json``, so every process and every resume of the
experiment uses the same tasks and tests.
With ``rounds`` > 1 (self-improvement iterated, the paper's C2 loop), a variant whose buffer is
self-generated (beam, sample, passing, failed) gets its own copy of that buffer; each round trains ``steps`` steps
from the previous round's weights, evaluates on the held-out tasks, then samples the train tasks again
with the new weights (same mode, k), judges the programs and adds them to the variant's buffer (only the
fully passing ones for ``passing``, only the others for ``failed``). Static buffers (teacher, model-teacher) are replayed again each
round. Every round is a phase ``variant-<name>-s<seed>-r<round>``; the last round's evaluation is the
variant's result, and ``results.json`` keeps the per-round curve.
``teacher_model`` (C1 with a stronger model of the same tasks) fills the ``model-teacher`` buffer with
that model's beam-search programs for the train tasks, judged.
Every phase writes ``<out>/phases/<phase>.json`` when it finishes; running the same command again skips
finished phases (the buffers deduplicate re-sent programs), so an interrupted experiment resumes. The
configuration is saved as ``<out>/config.json``; ``btp experiment --config <that file>`` repeats the run.
The services are chosen as `btp run` chooses them (:mod:`services.pipeline.connect`): in-process by default
(generator, judge with bubblewrap, one SQLite file per buffer, training in this process), or the running
stack's where ``BTP_*_URL`` is set. Against a buffer service every buffer above is a scope of that one
service (:mod:`.buffers`: its own data set ``exp:<name>-<id>:<buffer>``), and with ``BTP_TRAINER_URL`` the
jobs go to the trainer service, which replays exactly that scope. The ``model-teacher`` phase still loads its
teacher in this process (the stack has one generator service, serving the student). Generating, judging, evaluating, the
replay requests and the training jobs are the steps of :mod:`services.pipeline.run.steps`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from services.common.client import BufferClient, GeneratorClient, JudgeClient
from services.common.schemas.buffer import ExperienceIn, TaskIn
from services.common.schemas.generator import PromptFormat
from services.common.schemas.judge import Limits

from ..datasets.loaders import humaneval_path, load_dataset, select
from ..run import steps
from ..run.folder import write_json
from ..run.steps import Reporter, SilentReporter, Trainer
from ..settings import Settings
from .buffers import ScopedBuffer, scope_name
from .recipes import BEAM_SUBSETS, SELF_GENERATED, ExperimentConfig, Variant, keeps
from .stats import markdown_table, plot_alpha, plot_rounds, plot_variants, round_curve, summarize_variant


def canonical_programs(path: Path | None = None) -> dict[str, str]:
    """HumanEval's reference completions by task id (the stronger source of C1)."""
    path = path or humaneval_path()
    out: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                out[str(rec["task_id"])] = str(rec["canonical_solution"])
    return out


class Experiment:
    """Runs (or resumes) one experiment in ``out``; see the module docstring."""

    def __init__(
        self, cfg: ExperimentConfig, out: Path, settings: Settings, log: Callable[[str], None] = print,
        reporter: Reporter | None = None,
    ) -> None:
        self.cfg, self.out, self.settings, self.log = cfg, out, settings, log
        self.reporter: Reporter = reporter or SilentReporter()  # phases with counts (bars or lines)
        if cfg.dataset == "codeio":
            tasks = self.codeio_tasks()
        else:
            tasks = load_dataset(
                cfg.dataset,
                Path(cfg.dataset_path)
                if cfg.dataset_path
                else (settings.mbpp_path if cfg.dataset == "mbpp" else None),
                test_fraction=cfg.test_fraction,
            ).tasks
        self.train_tasks = select(tasks, "train", cfg.train_size)
        self.test_tasks = select(tasks, "test", cfg.test_size)
        self.teacher_tasks: list[TaskIn] = []
        if cfg.teacher_size and "teacher" in cfg.buffers_needed():
            he = load_dataset("humaneval", None, test_fraction=cfg.test_fraction).tasks
            self.teacher_tasks = select(he, "train", cfg.teacher_size)
        self.transfer_tasks: list[TaskIn] = []
        if cfg.transfer == "humaneval":  # never trained on: every task, in hash order, both "splits"
            he = load_dataset("humaneval", None, test_fraction=cfg.test_fraction).tasks
            self.transfer_tasks = sorted(he, key=lambda t: hashlib.sha256(t.id.encode()).hexdigest())
            if cfg.transfer_size is not None:
                self.transfer_tasks = self.transfer_tasks[: cfg.transfer_size]
        self.limits = Limits(time_s=cfg.judge_time_s, memory_mb=cfg.judge_memory_mb)
        self.buffers: dict[str, BufferClient] = {}
        self.shared: BufferClient | None = None  # the buffer service, when BTP_BUFFER_URL is set
        self.served: str | None = None
        self.generator: GeneratorClient
        self.judge: JudgeClient

    def codeio_tasks(self) -> list[TaskIn]:
        """The CodeIO slice: imported once (the references run in the judge's sandbox), then read from
        ``<out>/tasks.json`` so that a resumed or parallel process sees exactly the same tests."""
        from ..datasets.codeio.importer import load_run_slice

        cache = self.out / "tasks.json"
        if cache.exists():
            return [TaskIn.model_validate(t) for t in json.loads(cache.read_text(encoding="utf-8"))]
        cfg = self.cfg
        t0 = time.perf_counter()
        tasks = load_run_slice(
            Path(str(cfg.dataset_path)), test_fraction=cfg.test_fraction, train_size=cfg.train_size,
            test_size=cfg.test_size, workers=cfg.import_workers, environment=cfg.judge_environment,
        )  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{id(self)}.tmp")
        tmp.write_text(json.dumps([t.model_dump(mode="json") for t in tasks]), encoding="utf-8")
        tmp.replace(cache)  # atomic: a parallel process reads all of it or imports itself
        self.log(f"codeio: {len(tasks)} tasks imported in {time.perf_counter() - t0:.0f}s -> {cache}")
        return tasks

    # --- bookkeeping ---------------------------------------------------------------------------

    def phase_path(self, phase: str) -> Path:
        return self.out / "phases" / f"{phase.replace(':', '_').replace('/', '_')}.json"

    def done(self, phase: str) -> dict[str, Any] | None:
        path = self.phase_path(phase)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def finish(self, phase: str, data: dict[str, Any], started: float) -> dict[str, Any]:
        data = {**data, "seconds": round(time.perf_counter() - started, 2)}
        write_json(self.phase_path(phase), data)
        self.log(f"{phase}: done in {data['seconds']:.0f}s")
        return data

    def scope_id(self) -> str:
        """This experiment folder's id in a shared buffer service (made once, kept for resuming), so two
        experiments of the same name never share programs."""
        path = self.out / "scope_id"
        if not path.exists():
            path.write_text(uuid.uuid4().hex[:8], encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def buffer(self, stack: ExitStack, name: str) -> BufferClient:
        if name not in self.buffers:
            from ..connect import embedded_buffer, open_buffer

            if self.settings.buffer_url:
                if self.shared is None:
                    self.shared = open_buffer(stack, self.settings)
                scope = scope_name(f"{self.cfg.name}-{self.scope_id()}", name)
                self.buffers[name] = ScopedBuffer(self.shared, scope)
            else:
                url = f"sqlite:///{self.out / f'buffer-{name}.sqlite3'}"
                self.buffers[name] = embedded_buffer(stack, self.settings, url)
            if name.startswith("own-"):  # a variant's own copy: its tasks come with the copy
                return self.buffers[name]
            # (re)state the tasks: the upsert is idempotent and puts back the original prompts
            tasks = self.teacher_tasks if name == "teacher" else self.train_tasks
            if tasks:
                self.buffers[name].upsert_tasks(tasks)
        return self.buffers[name]

    # --- phases --------------------------------------------------------------------------------

    def for_training(self, tasks: list[TaskIn]) -> list[TaskIn]:
        """The tasks as the buffers hold them: the original prompt X (the trainer lays X out in the
        job's ``prompt_format`` exactly as the generator conditions on it)."""
        return tasks

    def generation(self, fmt: PromptFormat | None = None) -> steps.Generation:
        """How this experiment generates (the student's prompt format unless ``fmt`` says otherwise)."""
        cfg = self.cfg
        return steps.Generation(max_new_tokens=cfg.max_new_tokens, prompt_format=fmt or cfg.prompt_format,
                                temperature=cfg.sample_temperature, batch=cfg.gen_batch)  # fmt: skip

    def use_weights(self, weights: str) -> None:
        """Serve ``weights`` (the base model's name or a checkpoint folder) unless already served."""
        if self.served != weights:
            self.generator.set_weights(weights)
            self.served = weights

    def generate_programs(
        self,
        mode: str,
        *,
        source: str,
        round_: int,
        generator: GeneratorClient | None = None,
        seed0: int = 1000,
        fmt: PromptFormat | None = None,
    ) -> list[ExperienceIn]:
        """k programs per train task from the served weights (beam search or sampling), not judged.

        Programs are stored as the student's format expects them: a raw completion (``fmt`` raw) becomes
        prompt + completion when the student trains in the chat format (as the teacher's references do).
        """
        fmt = fmt or self.cfg.prompt_format
        whole = fmt == "raw" and self.cfg.prompt_format == "chat"
        items: list[ExperienceIn] = []
        gen = self.generation(fmt)
        self.reporter.phase(f"{source}: {mode} programs (k={self.cfg.k})", len(self.train_tasks))
        for i, part in enumerate(steps.chunks(self.train_tasks, self.cfg.gen_batch)):
            seed = None if mode == "beam" else seed0 + i
            cands = steps.generate(generator or self.generator, part, gen, mode=mode, k=self.cfg.k, seed=seed)
            per_task = [
                [((t.prompt + c.text) if whole else c.text, c.logprob, c.token_count) for c in task_cands]
                for t, task_cands in zip(part, cands, strict=True)
            ]
            items += steps.experiences(
                part, per_task, source=source, round_=round_,
                generation=lambda t: f"{t.id}#{mode}" + (f"-r{round_}" if round_ > 1 else ""),
            )  # fmt: skip
            self.reporter.advance(len(part))
        return items

    def sample(self, buf: BufferClient, mode: str, generator: GeneratorClient | None = None) -> dict[str, Any]:
        """k programs per train task from the base model (or the teacher model), stored unjudged."""
        buf.upsert_tasks(self.for_training(self.train_tasks))
        if generator is None:
            self.use_weights(self.cfg.model)
            source = f"{self.cfg.model}@base:{mode}"
        else:
            source = f"{self.cfg.teacher_model}@teacher:{mode}"
        fmt = self.cfg.teacher_prompt_format if generator is not None else None
        items = self.generate_programs(mode, source=source, round_=1, generator=generator, fmt=fmt)
        return {"stored": buf.add_experiences(items).created if items else 0}

    def judge_items(self, items: list[ExperienceIn]) -> list[ExperienceIn]:
        """``items`` with their pass rates, for programs of the train tasks."""
        return steps.judged_items(self.judge, self.train_tasks, items, self.limits)

    def copy_buffer(self, src: BufferClient, dst: BufferClient, *, only: str | None = None) -> int:
        """Copy the judged programs of the train tasks from ``src`` into ``dst`` (idempotent); ``only``
        names a filter of :func:`~.recipes.keeps` (``passing``, ``failed``)."""
        dst.upsert_tasks(self.for_training(self.train_tasks))
        keep = []
        for t in self.train_tasks:
            keep += [
                e
                for e in src.list_experiences(task_id=t.id, judged=True, limit=1000).items
                if only is None or keeps(only, e.pass_rate)
            ]
        if keep:
            dst.add_experiences(
                [
                    ExperienceIn(
                        task_id=e.task_id,
                        program=e.program,
                        logprob=e.logprob,
                        token_count=e.token_count,
                        source=e.source,
                        round=e.round,
                        generation=e.generation,
                        pass_rate=e.pass_rate,
                        judge=e.judge,
                    )
                    for e in keep
                ]
            )
        return len(keep)

    def teach(self, buf: BufferClient) -> dict[str, Any]:
        """Reference programs of the teacher tasks (possibility 1: no log-probability is known)."""
        buf.upsert_tasks(self.for_training(self.teacher_tasks))
        refs = canonical_programs()
        items = [
            ExperienceIn(
                task_id=t.id,
                program=(t.prompt + refs[t.id]) if self.cfg.prompt_format == "chat" else refs[t.id],
                logprob=0.0,
                token_count=0,
                source="humaneval-canonical",
                round=1,
            )
            for t in self.teacher_tasks
            if t.id in refs
        ]
        return {"stored": buf.add_experiences(items).created if items else 0}

    def judge_all(self, buf: BufferClient, tasks: list[TaskIn]) -> dict[str, Any]:
        """Run every unjudged program of ``tasks`` and store its pass rate."""
        judged = steps.judge_pending(buf, self.judge, tasks, self.limits,
                                     on_start=lambda n: self.reporter.phase(f"judging {n} programs", n),
                                     progress=self.reporter.advance)  # fmt: skip
        return {"judged": judged, "stats": buf.stats().model_dump(mode="json")}

    def subset(self, src: BufferClient, dst: BufferClient, which: str) -> dict[str, Any]:
        """Copy the fully passing (``passing``: rejection sampling) or the other (``failed``) programs of
        ``src`` into ``dst``."""
        n = self.copy_buffer(src, dst, only=which)
        tasks = {e.task_id for t in self.train_tasks for e in dst.list_experiences(task_id=t.id, limit=1000).items}
        return {"programs": n, "tasks": len(tasks)}

    def evaluate(self, tasks: list[TaskIn] | None = None) -> dict[str, Any]:
        """Greedy program per held-out task (or per task of ``tasks``: the transfer set), judged: per-task
        pass rate, all-pass flag and program."""
        tasks = self.test_tasks if tasks is None else tasks
        what = "evaluation" if tasks is self.test_tasks else f"transfer evaluation ({self.cfg.transfer})"
        self.reporter.phase(f"{what} of {Path(str(self.served)).name}", len(tasks))
        ev = steps.evaluate(self.generator, self.judge, tasks, self.generation(), self.limits,
                            progress=self.reporter.advance)  # fmt: skip
        return {
            **ev.summary(),
            "per_task": {
                o.task_id: {"pass_rate": o.pass_rate, "passed_all": o.passed_all, "program": ev.programs[o.task_id]}
                for o in ev.outcomes
            },
        }

    def train_and_eval(
        self, variant: Variant, seed: int, buf: BufferClient, *, start: str | None = None, round_: int = 1
    ) -> dict[str, Any]:
        """Fine-tune ``start`` (default the base model) with ``variant``'s replay rule, evaluate.

        The checkpoint is kept (``checkpoint`` in the result); the caller deletes it when done with it.
        """
        cfg = self.cfg
        datasets = buf.datasets if isinstance(buf, ScopedBuffer) else None  # a file holds this buffer only
        sample = steps.sample_request(variant, n=cfg.n, datasets=datasets, seed=steps.sample_seed(seed, round_))
        job = steps.training_job(
            model=start or cfg.model, sample=sample, steps=cfg.steps,
            learning_rate=variant.learning_rate or cfg.learning_rate,
            lora=cfg.lora, max_seq_len=cfg.max_seq_len, prompt_format=cfg.prompt_format,
            seed=steps.job_seed(seed, round_),
        )  # fmt: skip
        t0 = time.perf_counter()
        checkpoint, losses = self.trainer_for(buf).train(
            job, round_=round_, reporter=self.reporter, label=self.checkpoint_dir(variant, seed, round_).name
        )
        train_s = time.perf_counter() - t0
        drawn = buf.sample(job.sample.model_copy(update={"n": 512, "seed": 99}))
        self.use_weights(checkpoint)
        ev = self.evaluate()
        transfer = self.evaluate(self.transfer_tasks) if self.transfer_tasks and round_ == cfg.rounds else None
        mean_pr = sum(i.pass_rate or 0.0 for i in drawn.items) / max(len(drawn.items), 1)
        return {
            "eval": ev,
            **({"transfer": transfer} if transfer is not None else {}),
            "checkpoint": checkpoint,
            "train_seconds": round(train_s, 2),
            "loss_history": losses,
            "replay": {
                "mean_pass_rate_drawn": mean_pr,
                "distinct_programs_drawn": len({i.experience_id for i in drawn.items}),
            },
        }

    def trainer_for(self, buf: BufferClient) -> Trainer:
        """The trainer of a job replaying ``buf``: the trainer service when ``BTP_TRAINER_URL`` is set (``buf``
        is then a scope of the buffer service it reads), else this process, as `btp run` chooses."""
        from ..connect import open_trainer

        return open_trainer(self.settings, buf, self.out / "checkpoints", device=self.cfg.device)

    def checkpoint_dir(self, variant: Variant, seed: int, round_: int) -> Path:
        suffix = f"-r{round_}" if self.cfg.rounds > 1 else ""
        return self.out / "checkpoints" / f"{variant.name}-s{seed}{suffix}"

    def resample(self, variant: Variant, seed: int, round_: int, buf: BufferClient) -> dict[str, Any]:
        """Programs of the served (round ``round_ - 1``) weights for the train tasks, judged, added to ``buf``."""
        mode = "sample" if variant.buffer == "sample" else "beam"
        existing: set[tuple[str, str]] = set()
        for t in self.train_tasks:
            existing |= {(e.task_id, e.program) for e in buf.list_experiences(task_id=t.id, limit=1000).items}
        items = self.judge_items(
            self.generate_programs(
                mode,
                source=f"{self.cfg.model}@{variant.name}-s{seed}-r{round_ - 1}:{mode}",
                round_=round_,
                seed0=1000 * round_ + 100 * seed,
            )
        )
        rates = [e.pass_rate or 0.0 for e in items]
        keep = [e for e in items if keeps(variant.buffer, e.pass_rate)]
        if keep:
            buf.add_experiences(keep)
        stats = buf.stats()
        judged = [d for d in stats.datasets.values() if d.mean_pass_rate is not None]
        return {
            "generated": len(items),
            "added": len(keep),
            "new_programs": len({(e.task_id, e.program) for e in keep} - existing),
            "mean_pass_rate": sum(rates) / max(len(rates), 1),
            "fully_passing": sum(r == 1.0 for r in rates),
            "tasks_solved": len({e.task_id for e in items if e.pass_rate == 1.0}),
            "buffer_size": stats.experiences,
            "buffer_mean_pass_rate": (
                sum((d.mean_pass_rate or 0.0) * d.judged for d in judged) / max(sum(d.judged for d in judged), 1)
            ),
        }

    def run_variant(self, variant: Variant, seed: int, stack: ExitStack) -> dict[str, Any]:
        """All rounds of ``variant`` with ``seed`` (resuming finished rounds); the last round's result."""
        cfg = self.cfg
        if cfg.rounds == 1:
            result = self.train_and_eval(variant, seed, self.buffer(stack, variant.buffer))
            shutil.rmtree(self.checkpoint_dir(variant, seed, 1), ignore_errors=True)
            return result
        if variant.buffer in SELF_GENERATED:
            buf = self.buffer(stack, f"own-{variant.name}-s{seed}")
            if not self.done(f"variant-{variant.name}-s{seed}-r1"):
                self.copy_buffer(self.buffer(stack, variant.buffer), buf)
        else:
            buf = self.buffer(stack, variant.buffer)
        rounds: list[dict[str, Any]] = []
        start: str | None = None
        for r in range(1, cfg.rounds + 1):
            phase = f"variant-{variant.name}-s{seed}-r{r}"
            done = self.done(phase)
            lost = (  # a finished round whose checkpoint the next, unfinished round still needs
                done is not None
                and r < cfg.rounds
                and not self.settings.trainer_url  # a trainer service's checkpoints are on its own disk
                and not Path(done["checkpoint"]).exists()
                and not self.done(f"variant-{variant.name}-s{seed}-r{r + 1}")
            )
            if done is None or lost:
                t0 = time.perf_counter()
                self.log(f"{phase}: training {cfg.steps} steps x {cfg.n} from {start or cfg.model}")
                done = self.train_and_eval(variant, seed, buf, start=start, round_=r)
                if r < cfg.rounds and variant.buffer in SELF_GENERATED:
                    done["resample"] = self.resample(variant, seed, r + 1, buf)
                done = self.finish(phase, done, t0)
                if r > 1:
                    shutil.rmtree(self.checkpoint_dir(variant, seed, r - 1), ignore_errors=True)
            rounds.append(done)
            start = done["checkpoint"]
        shutil.rmtree(self.checkpoint_dir(variant, seed, cfg.rounds), ignore_errors=True)
        last = rounds[-1]
        return {
            **{k: last[k] for k in ("eval", "loss_history", "replay", "transfer") if k in last},
            "train_seconds": round(sum(r["train_seconds"] for r in rounds), 2),
            "rounds": [
                {
                    "round": i + 1,
                    "pass_rate": r["eval"]["pass_rate"],
                    "accuracy": r["eval"]["accuracy"],
                    "final_loss": r["loss_history"][-1]["loss"] if r["loss_history"] else None,
                    "replay": r["replay"],
                    "resample": r.get("resample"),
                    "seconds": r["seconds"],
                }
                for i, r in enumerate(rounds)
            ],
        }

    def prepare(self, name: str | None, stack: ExitStack) -> None:
        """Fill buffer ``name`` the first time a phase needs it (sampling is the costly part)."""
        if name in ("beam", "sample") and not self.done(f"sample-{name}"):
            t0 = time.perf_counter()
            buf = self.buffer(stack, name)
            info = self.sample(buf, name)
            info.update(self.judge_all(buf, self.train_tasks))
            self.finish(f"sample-{name}", info, t0)
        elif name == "teacher" and self.teacher_tasks and not self.done("teacher"):
            t0 = time.perf_counter()
            buf = self.buffer(stack, "teacher")
            info = self.teach(buf)
            info.update(self.judge_all(buf, self.teacher_tasks))
            self.finish("teacher", info, t0)
        elif name == "model-teacher" and not self.done("model-teacher"):
            from ..connect import embedded_generator

            t0 = time.perf_counter()
            buf = self.buffer(stack, "model-teacher")
            with ExitStack() as teacher_stack:  # the teacher's weights are freed when it is done
                teacher = embedded_generator(teacher_stack, self.settings, str(self.cfg.teacher_model))
                info = self.sample(buf, "beam", generator=teacher)
            info.update(self.judge_all(buf, self.train_tasks))
            self.finish("model-teacher", info, t0)
        elif name in BEAM_SUBSETS and not self.done(str(name)):
            self.prepare("beam", stack)
            t0 = time.perf_counter()
            self.finish(str(name), self.subset(self.buffer(stack, "beam"), self.buffer(stack, str(name)), str(name)), t0)

    # --- the whole thing -----------------------------------------------------------------------

    def run(
        self, only: list[str] | None = None, *, shared: bool = True, seeds: list[int] | None = None
    ) -> dict[str, Any]:
        """Run (or resume) the phases; ``shared=False`` leaves the beam buffer and the base evaluation to
        another process working on the same folder (variants that need them then wait for them);
        ``seeds`` runs only those of the config's seeds (several processes split the seeds)."""
        from ..connect import check_remote_services, check_trainer_reaches_buffer, open_generator, open_judge

        cfg = self.cfg
        check_trainer_reaches_buffer(self.settings)
        check_remote_services(self.settings)
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", cfg.model_dump(mode="json"))
        started = time.perf_counter()
        with ExitStack() as stack:
            self.generator = open_generator(stack, self.settings, cfg.model, self.out / "checkpoints")
            # a generator service may serve anything (another run's checkpoint): the first use_weights says
            self.served = None if self.settings.generator_url else cfg.model
            self.judge = open_judge(stack, self.settings)
            if shared:
                self.prepare("beam" if "beam" in cfg.buffers_needed() else None, stack)
                for subset in sorted(cfg.buffers_needed() & BEAM_SUBSETS):  # before any --no-shared process
                    self.prepare(subset, stack)  # needs them: one writer per SQLite file
            if shared and not self.done("eval-base"):
                t0 = time.perf_counter()
                self.use_weights(cfg.model)
                self.finish("eval-base", self.evaluate(), t0)
            if shared and self.transfer_tasks and not self.done("eval-base-transfer"):
                t0 = time.perf_counter()
                self.use_weights(cfg.model)
                self.finish("eval-base-transfer", self.evaluate(self.transfer_tasks), t0)
            for seed in [s for s in cfg.seeds if seeds is None or s in seeds]:
                for v in cfg.variants:
                    phase = f"variant-{v.name}-s{seed}"
                    if (only and v.name not in only) or self.done(phase):
                        continue
                    t0 = time.perf_counter()
                    if v.buffer == "teacher" and not self.teacher_tasks:
                        self.finish(phase, {"skipped": "teacher_size is 0"}, t0)
                        continue
                    if not shared and v.buffer in {"beam"} | BEAM_SUBSETS:
                        while not self.done("sample-beam" if v.buffer == "beam" else v.buffer):
                            time.sleep(10)
                    self.prepare(v.buffer, stack)
                    t0 = time.perf_counter()
                    if v.buffer in BEAM_SUBSETS and not (self.done(v.buffer) or {}).get("programs"):
                        why = "passes every test" if v.buffer == "passing" else "fails a test"
                        self.finish(phase, {"skipped": f"no program of the beam buffer {why}"}, t0)
                        continue
                    self.log(f"{phase}: {cfg.rounds} round(s) of {cfg.steps} steps x {cfg.n}")
                    self.finish(phase, self.run_variant(v, seed, stack), t0)
        summary = self.summarize()
        summary["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
        write_json(self.out / "results.json", summary)
        (self.out / "results.md").write_text(markdown_table(summary), encoding="utf-8")
        plot_variants(summary, self.out / "variants.png")
        plot_alpha(summary, self.out / "alpha.png")
        plot_rounds(summary, self.out / "rounds.png")
        return summary

    def summarize(self) -> dict[str, Any]:
        """Base and variant scores with CIs (only the phases that finished)."""
        cfg = self.cfg
        base = self.done("eval-base")
        if base is None:
            return {"config": cfg.model_dump(mode="json"), "variants": {}, "base": None}
        base_summary = summarize_variant([base], base, draws=cfg.bootstrap_draws)
        base_transfer = self.done("eval-base-transfer")
        variants: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for v in cfg.variants:
            runs = [self.done(f"variant-{v.name}-s{s}") for s in cfg.seeds]
            evals = [r["eval"] for r in runs if r and "eval" in r]
            reasons = [r["skipped"] for r in runs if r and "skipped" in r]
            if reasons:
                skipped[v.name] = reasons[0]
            if not evals:
                continue
            entry = summarize_variant(evals, base, draws=cfg.bootstrap_draws)
            entry.update(
                description=v.description,
                alpha=v.alpha,
                alpha_sweep=v.alpha_sweep,
                buffer=v.buffer,
                scheme=v.scheme,
                final_loss=[r["loss_history"][-1]["loss"] for r in runs if r and r.get("loss_history")],
                replay=[r["replay"] for r in runs if r and "replay" in r],
                rounds=round_curve([r["rounds"] for r in runs if r and "rounds" in r]),
                learning_rate=v.learning_rate or cfg.learning_rate,
            )
            transfers = [r["transfer"] for r in runs if r and "transfer" in r]
            if transfers and base_transfer is not None:  # same statistics, on the never-trained-on set
                entry["transfer"] = summarize_variant(transfers, base_transfer, draws=cfg.bootstrap_draws)
            variants[v.name] = entry
            seconds[v.name] = sum(r["seconds"] for r in runs if r)
        phases = {
            p: self.done(p)
            for p in ("sample-beam", "sample-sample", "teacher", "model-teacher", "passing", "failed")
        }
        return {
            "config": cfg.model_dump(mode="json"),
            "base": base_summary,
            "base_transfer": (
                summarize_variant([base_transfer], base_transfer, draws=cfg.bootstrap_draws) if base_transfer else None
            ),
            "variants": variants,
            "skipped": skipped,
            "not_finished": [
                f"{v.name}-s{s}"
                for s in cfg.seeds
                for v in cfg.variants
                if not self.done(f"variant-{v.name}-s{s}")
            ],
            "buffers": {
                k: ({kk: vv for kk, vv in p.items() if kk != "stats"} | {"stats": p.get("stats")})
                if p
                else None
                for k, p in phases.items()
            },
            "seconds": {
                "base_eval": base["seconds"],
                **{f"variant:{k}": s for k, s in seconds.items()},
                **{p: (d or {}).get("seconds", 0.0) for p, d in phases.items()},
            },
        }


