"""Asynchronous BTP (`btp run --async`): sampling, judging and training at once, as actor-learner systems
do (IMPALA, Reverb's replay-centred design; verl, OpenRLHF and AReaL moved RL rollouts off the lockstep).

```
actors  (cfg.actors threads)  pass p over the train tasks (seeded order), gen_batch tasks a call: beam
                              search (k) with the weights served now -> buffer; every program carries
                              the response's weights_version                                    Eq. 1-3
judge   (one thread)          unjudged programs of the run's train tasks -> judge -> PATCH        Eq. 4-5
trainer (one thread)          version v: a job of publish_every steps on PPER minibatches of JUDGED
                              programs (SampleRequest.include_unjudged stays false) from version v-1's
                              weights -> checkpoint -> POST /v1/weights {version: v, lineage: run} Eq. 6-8
                              -> held-out evaluation every eval_every versions
```
The trainer evaluates between two versions and publishes nothing meanwhile, so a whole evaluation sees
one version; the actors hand out no new batch during it (batches already in the generator finish). On one
H200 with the actors sampling beside it, each held-out evaluation took 24-71 s instead of 7-14 s and held
the trainer for 168 of the run's 212 s (docs/results.md, "Asynchronous BTP"): the evaluation is the
protocol's measurement, and it now runs on a generator nobody else is using, as in lockstep. The generator swaps weights between batches (requests
already accepted finish on the weights they started with), so nothing waits for a swap.

Bounded staleness, ``max_lag`` in versions:
- the actors start pass p only once the trainer has published version p - 1 - max_lag, and sample only
  while the generator serves a version within max_lag of the trainer's (trainer version - sampling
  version <= max_lag);
- the trainer starts version v only once passes 1..v - max_lag are sampled and judged.
max_lag = 0 is the lockstep schedule (sample pass 1, judge it, train version 1, sample pass 2, ...); each
extra version lets sampling run one version further ahead of training (older programs are still
replayed by P2Value). The lag of every trained program (the version being trained minus the version
that sampled it) is in ``metrics/async.json`` and in ``progress.json`` for the dashboard.

Threads, not processes: each loop is I/O on a service client. httpx clients are thread-safe; the
embedded apps sit behind Starlette TestClients whose anyio portal takes calls from any thread; the heavy
work runs where it always runs (the generator's batcher thread, the judge's sandboxes, torch in the
trainer), outside the GIL. Embedded or against the stack, the same threads drive the same clients.
A loop that fails (a service gone for longer than the clients' retries) is restarted after a pause, up to
``MAX_RESTARTS`` times in a row; everything it does is idempotent (the buffer deduplicates programs,
pass rates are set, a version's publish is a no-op when repeated), so a restart loses and duplicates
nothing.

Stopping (Ctrl-C, or the budget spent): the actors store the batch they generate and stop, the judge
judges everything stored, the trainer finishes and publishes the version it trains. ``state.json`` holds
the version, its checkpoint, trained programs and sampled passes, so ``btp run --resume NAME`` goes on.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from services.common.schemas.buffer import TaskIn

from . import steps
from .folder import write_json
from .loop import Pipeline

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_PAUSE_S = 1.0
IDLE_S = 0.2


@dataclass
class Progress:
    """What the three loops share (guarded by :attr:`AsyncPipeline.cond`)."""

    version: int = 0  # published by the trainer
    served: int = 0  # what the generator answered with last
    trained_programs: int = 0
    passes_started: int = 0
    passes_stored: int = 0  # passes 1..passes_stored sampled and stored to the end
    passes_judged: int = 0  # passes 1..passes_judged judged to the end
    sampled: int = 0  # programs generated this session (stored or deduplicated)
    stored: int = 0  # new buffer rows this session
    judged: int = 0  # judged this session
    actor_wait_s: float = 0.0
    trainer_wait_s: float = 0.0
    eval_seconds: float = 0.0  # held-out evaluations, summed (the actors pause meanwhile)
    batches_during_eval: int = 0  # batches handed out while an evaluation ran (0 unless the pause breaks)
    restarts: dict[str, int] = field(default_factory=dict)
    lag: dict[str, Any] = field(default_factory=dict)  # of the last version trained


def lag_summary(version: int, losses: list[dict[str, Any]]) -> dict[str, Any]:
    """The lag of the programs a version trained on: ``version - 1`` (the weights being trained) minus the
    version that sampled each program (the trainer reports them per step, in process and through the trainer
API); None where no step names a version (programs from teachers or files)."""
    lags = [version - 1 - w for p in losses for w in (p.get("weights_versions") or []) if w is not None]
    if not lags:
        return {"programs": 0, "mean": None, "max": None}
    return {"programs": len(lags), "mean": sum(lags) / len(lags), "max": max(lags)}


class AsyncPipeline(Pipeline):
    """Algorithm 1 with sampling, judging and training running at once; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self.svc.trainer, "before_training", None) is not None:
            # lockstep lends the embedded generator's memory to training; here it keeps generating meanwhile
            self.svc.trainer.before_training = None  # type: ignore[attr-defined]
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.p = Progress()
        self._pass_order: list[TaskIn] = []
        self._pass_next = 0  # next batch start in the pass being handed out
        self._outstanding: dict[int, int] = {}  # pass -> batches handed out and not yet stored
        self._handed_all: set[int] = set()
        self._retry: list[tuple[int, list[TaskIn]]] = []
        self._publish_lock = threading.Lock()
        self._published: tuple[int, str | None] = (0, None)  # the version the generator should serve  # batches whose actor failed: sampled again first
        self._actors_alive = 0
        self._evaluating = False
        self._errors: list[BaseException] = []
        self._started = time.monotonic()
        self._seconds_before = 0.0

    # --- shared state ------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self._seconds_before + time.monotonic() - self._started

    def _budget_spent(self) -> bool:
        cfg = self.cfg
        programs = cfg.program_budget()
        if programs is not None and self.p.trained_programs >= programs:
            return True
        return cfg.budget_seconds is not None and self._elapsed() >= cfg.budget_seconds

    def _wait(self, ready: Callable[[], bool], counter: str) -> bool:
        """Wait (holding :attr:`cond`) until ``ready()`` or stop; True when ready. Time waited adds to ``counter``."""
        start = time.monotonic()
        while not ready():
            if self.stop.is_set():
                return False
            self.cond.wait(IDLE_S)
        setattr(self.p, counter, getattr(self.p, counter) + time.monotonic() - start)
        return True

    def snapshot(self) -> dict[str, Any]:
        """The counters, the lag and the wall time: for metrics/async.json, progress.json and --json."""
        with self.cond:
            out = asdict(self.p)
        out["sampling_lag"] = out["version"] - out["served"]
        out["wall_seconds"] = round(self._elapsed(), 2)
        out["actor_wait_s"] = round(out["actor_wait_s"], 2)
        out["trainer_wait_s"] = round(out["trainer_wait_s"], 2)
        out["eval_seconds"] = round(out["eval_seconds"], 2)
        return out

    def _record(self, **state_update: Any) -> None:
        """Write state.json (merged with ``state_update``), metrics/async.json and the live view."""
        snap = self.snapshot()
        with self.cond:
            state = self.folder.state()
            for key, value in state_update.items():
                setattr(state, key, value)
            state.passes = max(state.passes, self.p.passes_stored)
            state.seconds = snap["wall_seconds"]
            self.folder.save_state(state)
        with self.cond:
            current = self._async_metrics()
            current.update(snap)
            write_json(self.folder.path / "metrics" / "async.json", current)
        self.progress.extra("async", snap)

    # --- actors --------------------------------------------------------------------------------

    def _next_batch(self) -> tuple[int, list[TaskIn]] | None:
        """The next (pass, tasks) to sample, waiting on the staleness bound and while a held-out evaluation
        runs; None once stopping."""
        cfg = self.cfg
        with self.cond:
            batch = self._hand_out(cfg)
            if batch is not None and self._evaluating:
                self.p.batches_during_eval += 1
            return batch

    def _hand_out(self, cfg: Any) -> tuple[int, list[TaskIn]] | None:
        """(holding :attr:`cond`) the retried batch first, else the next batch of the pass being handed out."""

        def idle_and(ready: Callable[[], bool]) -> Callable[[], bool]:
            return lambda: not self._evaluating and ready()

        if not self._wait(idle_and(lambda: True), "actor_wait_s"):
            return None
        if self._retry and not self.stop.is_set():
            return self._retry.pop(0)
        if self._pass_next >= len(self._pass_order):  # the pass is handed out: open the next one
            nxt = self.p.passes_started + 1
            if not self._wait(idle_and(partial(self._may_start_pass, nxt)), "actor_wait_s"):
                return None
            self.p.passes_started = nxt
            order = list(self.train_tasks)
            random.Random(cfg.seed * 7919 + nxt).shuffle(order)
            self._pass_order, self._pass_next = order, 0
            self._outstanding[nxt] = 0
        if not self._wait(idle_and(lambda: self.p.version - self.p.served <= cfg.max_lag), "actor_wait_s"):
            return None
        if self.stop.is_set():
            return None
        pass_ = self.p.passes_started
        tasks = self._pass_order[self._pass_next : self._pass_next + cfg.gen_batch]
        self._pass_next += len(tasks)
        self._outstanding[pass_] += 1
        if self._pass_next >= len(self._pass_order):
            self._handed_all.add(pass_)
        return pass_, tasks

    def _stored_batch(self, pass_: int, sampled: int, created: int) -> None:
        with self.cond:
            self._outstanding[pass_] -= 1
            self.p.sampled += sampled
            self.p.stored += created
            while (self.p.passes_stored + 1) in self._handed_all and self._outstanding.get(self.p.passes_stored + 1) == 0:
                self.p.passes_stored += 1
            self.cond.notify_all()

    def _sample(self, pass_: int, tasks: list[TaskIn]) -> None:
        """Beam search with the weights served now; each program keeps the version that produced it."""
        cfg = self.cfg
        resp = self.svc.generator.generate(self.gen.request([t.prompt for t in tasks], mode="beam", k=cfg.k))
        per_task: list[list[tuple[str, float, int]]] = [[] for _ in tasks]
        for result in resp.results:
            per_task[result.prompt_index] = [(c.text, c.logprob, c.token_count) for c in result.candidates]
        version = resp.weights_version
        if version < self.p.served:  # versions never go back: the generator restarted on its base weights
            self._republish()
        items = steps.experiences(tasks, per_task, source=f"{cfg.model}@v{version}", round_=pass_,
                                  generation=lambda t: f"{t.id}#p{pass_}", weights_version=version)  # fmt: skip
        created = self.svc.buffer.add_experiences(items).created if items else 0
        with self.cond:
            self.p.served = max(self.p.served, version)
        self._stored_batch(pass_, len(items), created)

    def _republish(self) -> None:
        """Publish the trainer's current version again (a restarted generator serves version 0)."""
        with self._publish_lock:
            version, checkpoint = self._published
            health = self.svc.generator.health()
            if health.get("lineage") == self.folder.name and health.get("weights_version") == version:
                return  # another actor did it
            res = self.svc.generator.set_weights(checkpoint or self.cfg.model, version=version, lineage=self.folder.name)
            with self.cond:
                self.p.served = res.version
                self.p.restarts["generator"] = self.p.restarts.get("generator", 0) + 1
            self.reporter.log(f"the generator came back on other weights: published version {version} again")

    def _actor(self) -> None:
        while (batch := self._next_batch()) is not None:
            pass_, tasks = batch
            try:
                self._sample(pass_, tasks)
            except BaseException:
                with self.cond:  # the batch stays outstanding; the next actor to ask samples it again
                    self._retry.append((pass_, tasks))
                raise

    # --- judge ---------------------------------------------------------------------------------

    def _judge(self) -> None:
        while True:
            with self.cond:
                stored_before = self.p.passes_stored
                actors_done = self._actors_alive == 0
            n = steps.judge_pending(self.svc.buffer, self.svc.judge, self.train_tasks, self.limits)
            with self.cond:
                self.p.judged += n
                self.p.passes_judged = max(self.p.passes_judged, stored_before)
                self.cond.notify_all()
                if n == 0:
                    if actors_done:
                        return
                    self.cond.wait(IDLE_S)

    # --- trainer -------------------------------------------------------------------------------

    def _train_version(self, version: int) -> None:
        cfg = self.cfg
        state = self.folder.state()
        job = steps.training_job(
            model=state.checkpoint or cfg.model,
            sample=steps.sample_request(cfg, n=cfg.n, datasets=list(cfg.datasets), seed=steps.sample_seed(cfg.seed, version)),
            steps=cfg.steps_per_version(), learning_rate=cfg.learning_rate, lora=cfg.lora, lora_r=cfg.lora_r,
            max_seq_len=cfg.max_seq_len, prompt_format=cfg.prompt_format, seed=steps.job_seed(cfg.seed, version),
        )  # fmt: skip
        start = time.monotonic()
        checkpoint, losses = self.svc.trainer.train(job, round_=version, reporter=_LogOnly(self.reporter),
                                                    label=f"version_{version}")  # fmt: skip
        train_s = time.monotonic() - start
        with self._publish_lock:
            res = self.svc.generator.set_weights(checkpoint, version=version, lineage=self.folder.name)
            self._published = (version, checkpoint)
        lag = lag_summary(version, losses)
        with self.cond:
            self.p.version = version
            self.p.served = max(self.p.served, res.version)
            self.p.trained_programs += job.steps * job.batch_size
            self.p.lag = lag
            trained = self.p.trained_programs
            self.cond.notify_all()
        record = {"version": version, "checkpoint": checkpoint, "trained_programs": trained,
                  "train_seconds": round(train_s, 2), "wall_seconds": round(self._elapsed(), 2), "lag": lag,
                  "loss": [{k: p.get(k) for k in ("step", "loss", "at", "experience_ids", "weights_versions")}
                           for p in losses]}  # fmt: skip
        self._append_version(record)
        self._record(version=version, checkpoint=checkpoint, trained_programs=trained)
        self.reporter.log(f"version {version} published ({trained} programs trained; lag {lag['mean']})")

    def _async_metrics(self) -> dict[str, Any]:
        path = self.folder.path / "metrics" / "async.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"versions": []}

    def _append_version(self, record: dict[str, Any]) -> None:
        with self.cond:
            current = self._async_metrics()
            versions = [v for v in current.get("versions", []) if v["version"] != record["version"]]
            current["versions"] = [*versions, record]
            write_json(self.folder.path / "metrics" / "async.json", current)

    def evaluate(self, round_: int) -> dict[str, Any]:
        """Greedy program per held-out task, judged (as :meth:`Pipeline.evaluate`), reported as a log line:
        the run's one phase keeps counting trained programs."""
        ev = steps.evaluate(self.svc.generator, self.svc.judge, self.test_tasks, self.gen, self.limits)
        summary = ev.summary()
        summary["per_task"] = {o.task_id: o.pass_rate for o in ev.outcomes}
        self.reporter.log(f"evaluation {round_} (version {self.p.version}): pass rate {summary['pass_rate']:.4f}, "
                          f"accuracy {summary['accuracy']:.4f}")  # fmt: skip
        return summary

    def _evaluate(self, index: int, version: int) -> None:
        step = f"eval:{index}"
        if self.folder.is_done(step):
            return
        start = time.monotonic()
        with self.cond:
            self._evaluating = True  # the actors hand out nothing new until it ends
        try:
            summary = self.evaluate(index)
        finally:
            with self.cond:
                self._evaluating = False
                self.p.eval_seconds += time.monotonic() - start
                self.cond.notify_all()
        with self.cond:
            trained = self.p.trained_programs
        with self.cond:
            self.folder.save_metrics(index, {"eval": summary, "eval_seconds": round(time.monotonic() - start, 2),
                                         "version": version, "trained_programs": trained,
                                         "wall_seconds": round(self._elapsed(), 2),
                                             "async": self.snapshot()})  # fmt: skip
            self.folder.mark(step)

    def _trainer(self) -> None:
        cfg = self.cfg
        every = cfg.versions_per_eval()
        self._evaluate(0, 0)
        while not self.stop.is_set() and not self._budget_spent():
            nxt = self.p.version + 1
            need = nxt - cfg.max_lag
            with self.cond:
                ready = self._wait(partial(self._may_train, need), "trainer_wait_s")
            if not ready:
                break
            self._train_version(nxt)
            if nxt % every == 0:
                self._evaluate(nxt // every, nxt)
        if self._budget_spent() and self.p.version % every and not self.folder.is_done(f"eval:{self.p.version // every + 1}"):
            self._evaluate(self.p.version // every + 1, self.p.version)  # the last version, off the grid

    def _may_start_pass(self, pass_: int) -> bool:
        """Actors: pass p starts once the trainer has published version p - 1 - max_lag."""
        return self.p.version >= pass_ - 1 - self.cfg.max_lag

    def _may_train(self, passes: int) -> bool:
        """Trainer: a version starts once ``passes`` passes are judged and the buffer has judged programs."""
        return self.p.passes_judged >= passes and self._judged_any()

    def _judged_any(self) -> bool:
        return self.p.judged > 0 or self.p.version > 0 or self.p.passes_judged > 0

    # --- supervision ---------------------------------------------------------------------------

    def _supervised(self, name: str, body: Callable[[], None], on_exit: Callable[[], None] | None = None) -> None:
        """Run ``body``; restart it after a failure (at most MAX_RESTARTS in a row), then fail the run."""
        failures = 0
        try:
            while True:
                try:
                    body()
                    return
                except Exception as exc:
                    failures += 1
                    with self.cond:
                        self.p.restarts[name] = self.p.restarts.get(name, 0) + 1
                    log.warning("%s failed (%s); restart %d of %d", name, exc, failures, MAX_RESTARTS)
                    self.reporter.log(f"{name} failed ({type(exc).__name__}: {exc}); restarting")
                    if failures > MAX_RESTARTS or (self.stop.is_set() and name == "trainer"):
                        raise
                    time.sleep(RESTART_PAUSE_S)
        except BaseException as exc:
            with self.cond:
                self._errors.append(exc)
            self.stop.set()
        finally:
            if on_exit is not None:
                on_exit()

    def _actor_exit(self) -> None:
        with self.cond:
            self._actors_alive -= 1
            self.cond.notify_all()

    # --- the run -------------------------------------------------------------------------------

    def _restore(self) -> None:
        state = self.folder.state()
        self.p.version = self.p.served = state.version
        self.p.trained_programs = state.trained_programs
        self.p.passes_started = self.p.passes_stored = state.passes  # a half-sampled pass is sampled again
        for p in range(1, state.passes + 1):
            self._handed_all.add(p)
        self._seconds_before = state.seconds
        self._published = (state.version, state.checkpoint)
        health = self.svc.generator.health()
        if (health.get("lineage") not in (None, self.folder.name) or health.get("weights_version", 0) != state.version
                or (state.checkpoint and health.get("checkpoint") != state.checkpoint)):  # fmt: skip
            weights = state.checkpoint or self.cfg.model
            self.reporter.log(f"the generator serves {weights} (version {state.version})")
            self.svc.generator.set_weights(weights, version=state.version, lineage=self.folder.name)

    def run(self) -> list[dict[str, Any]]:
        """Run (or resume) until the budget is spent or Ctrl-C; returns the per-evaluation metrics."""
        self.upload_tasks()
        self._restore()
        cfg = self.cfg
        programs = cfg.program_budget()
        if programs is not None:
            until, total = f"{programs} programs trained", programs
        else:
            until, total = f"{cfg.budget_seconds:.0f} s", int(cfg.budget_seconds or 0)
        self.reporter.phase(f"async: {cfg.actors} actor(s), max lag {cfg.max_lag}, until {until}", total)
        self._actors_alive = cfg.actors
        threads = [threading.Thread(target=self._supervised, args=(f"actor-{i}", self._actor, self._actor_exit),
                                    name=f"btp-actor-{i}", daemon=True) for i in range(cfg.actors)]  # fmt: skip
        threads.append(threading.Thread(target=self._supervised, args=("judge", self._judge), name="btp-judge", daemon=True))
        trainer = threading.Thread(target=self._supervised, args=("trainer", self._trainer), name="btp-trainer",
                                   daemon=True)  # fmt: skip
        for t in [*threads, trainer]:
            t.start()
        interrupted = False
        try:
            shown = 0
            while trainer.is_alive():
                trainer.join(0.5)
                with self.cond:
                    now = self.p.trained_programs if programs is not None else int(self._elapsed())
                if min(now, total) > shown:
                    self.reporter.advance(min(now, total) - shown)
                    shown = min(now, total)
                self.progress.extra("async", self.snapshot())
        except KeyboardInterrupt:
            interrupted = True
            self.reporter.log("stopping: the trainer finishes its version, the judge what is stored")
        finally:
            self.stop.set()
            with self.cond:
                self.cond.notify_all()
            for t in [trainer, *threads]:
                t.join()
            self._record()
        if self._errors:
            raise self._errors[0]
        if interrupted:
            raise KeyboardInterrupt
        state = self.folder.state()
        state.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.folder.save_state(state)
        self.progress.close()
        return self.folder.metrics()


class _LogOnly:
    """A reporter that turns the trainer's phases into log lines (the async run keeps one phase)."""

    def __init__(self, inner: steps.Reporter) -> None:
        self.inner = inner

    def phase(self, name: str, total: int) -> None:
        self.inner.log(name)

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        self.inner.log(message)
