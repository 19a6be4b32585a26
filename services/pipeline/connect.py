"""The services a run drives: remote (URLs from ``BTP_*_URL``) or embedded (the same apps in-process).

Embedded means each service's real FastAPI app (``create_app(settings)``) behind Starlette's
``TestClient`` (an ``httpx.Client``; entered as a context manager so the lifespans run), wrapped by the
same typed clients as a remote stack, so the driver cannot tell the two apart. The buffer then lives in
a SQLite file inside the run folder, and training runs in-process through
``services.trainer.training.run_job``; with ``BTP_TRAINER_URL`` set, jobs go to the trainer API (and its
Celery worker) instead.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from services.common.client import BufferClient, GeneratorClient, JudgeClient, TrainerClient
from services.common.errors import UpstreamError, ValidationError
from services.common.schemas.trainer import JobCreate, LossPoint
from services.common.spread import generator_client

from .datasets.codeio.execution import Equal, SandboxRun
from .run.loop import Services
from .run.steps import Reporter
from .settings import Settings


def quiet_embedded_logs(settings: Settings) -> None:
    """In-process services log at ``settings.log_level`` (``BTP_LOG_LEVEL``, WARNING for the CLI): it shows
    progress bars."""
    import logging

    level = settings.log_level.upper()
    for name in ("httpx", "httpx2", "services", "celery"):
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # the generator is remote: no transformers needed here
        pass


def _embedded_client(stack: ExitStack, app: Any) -> Any:
    from fastapi.testclient import TestClient

    return stack.enter_context(TestClient(app, raise_server_exceptions=False))


def embedded_generator(
    stack: ExitStack, settings: Settings, model: str, checkpoints: Path | None = None
) -> GeneratorClient:
    """The generator app in-process, serving ``model``; it may swap to checkpoints under ``checkpoints``
    (the run's own folder) besides the usual model roots."""
    from services.generator.app import create_app
    from services.generator.settings import Settings as GeneratorSettings

    roots = [*settings.model_roots, *([checkpoints] if checkpoints is not None else [])]
    gs = GeneratorSettings(model=model, data_dir=settings.data_dir, log_level=settings.log_level, model_roots=roots)
    return GeneratorClient(client=_embedded_client(stack, create_app(gs)))


def embedded_judge(stack: ExitStack, settings: Settings) -> JudgeClient:
    """The judge app in-process (its sandboxes are real bubblewrap containers)."""
    from services.judge.app import create_app
    from services.judge.settings import Settings as JudgeSettings

    return JudgeClient(client=_embedded_client(stack, create_app(JudgeSettings(data_dir=settings.data_dir, log_level=settings.log_level))))


@contextmanager
def judge_sandbox(workers: int, environment: str | None = None) -> Iterator[SandboxRun]:
    """The judge's ``run_in_sandbox`` over a warm pool of ``workers`` containers (judge settings from env),
    in the named judge ``environment`` (``BTP_JUDGE_ENVIRONMENTS``) when one is given."""
    from services.judge.app import ENV_UID_OFFSET
    from services.judge.sandbox import SandboxPool, load_environment, run_in_sandbox
    from services.judge.settings import Settings as JudgeSettings

    settings = JudgeSettings()
    env = None
    if environment is not None:
        if environment not in settings.environments:
            known = ", ".join(sorted(settings.environments)) or "none"
            raise ValueError(f"unknown judge environment {environment!r} (BTP_JUDGE_ENVIRONMENTS has: {known})")
        env = load_environment(environment, settings.environments[environment], settings)
    pool = SandboxPool(settings, size=max(1, workers), environment=env, uid_offset=ENV_UID_OFFSET if env else 0)
    pool.start()
    try:
        yield functools.partial(run_in_sandbox, settings=settings, pool=pool)  # type: ignore[misc]
    finally:
        pool.close()


def judge_equal() -> Equal:
    """The judge's ``call`` comparison (the importer keeps a case only if the judge would compare it so)."""
    from services.judge.compare import values_equal

    return values_equal


def embedded_buffer(stack: ExitStack, settings: Settings, database_url: str) -> BufferClient:
    """The buffer app in-process on ``database_url`` (migrated on start): the one place an in-process
    buffer is opened."""
    from services.buffer.app import create_app
    from services.buffer.db import normalize_url
    from services.buffer.settings import Settings as BufferSettings
    from services.common.startup import check_database

    check_database(normalize_url(database_url))  # one line naming the database, not the lifespan's traceback
    bs = BufferSettings(database_url=database_url, data_dir=settings.data_dir, log_level=settings.log_level)
    return BufferClient(client=_embedded_client(stack, create_app(bs)))


def open_buffer(stack: ExitStack, settings: Settings, database_url: str | None = None) -> BufferClient:
    """The configured buffer: ``BTP_BUFFER_URL`` when set, else in-process on ``database_url`` (default the
    shared ``BTP_DATABASE_URL`` or the SQLite file under the data dir)."""
    if settings.buffer_url:
        # fail fast at start (one line naming the buffer); retry only once the run is going
        with BufferClient(settings.buffer_url, token=settings.api_token, timeout=settings.service_timeout_s) as probe:
            check_answers("buffer", probe, settings.buffer_url)
        client = BufferClient(settings.buffer_url, token=settings.api_token, timeout=settings.service_timeout_s,
                              retry_s=settings.service_retry_s)  # fmt: skip
        stack.callback(client.close)
        return client
    return embedded_buffer(stack, settings, database_url or settings.resolved_database_url())


def check_remote_services(settings: Settings, timeout_s: float = 10.0) -> None:
    """Every service with a URL answers ``/health``, before a run creates anything;
    :class:`~services.common.startup.StartupError` naming the first that does not, and its setting."""
    for name, cls in (("buffer", BufferClient), ("judge", JudgeClient), ("generator", GeneratorClient),
                      ("trainer", TrainerClient)):  # fmt: skip
        url = getattr(settings, f"{name}_url")
        if url:
            make = generator_client if name == "generator" else cls  # every replica of a comma-separated list
            with make(url, token=settings.api_token, timeout=min(timeout_s, settings.service_timeout_s)) as client:
                check_answers(name, client, url)


def check_answers(name: str, client: Any, url: str) -> None:
    """``client``'s service answers ``/health``; :class:`~services.common.startup.StartupError` naming it and
    its ``BTP_<NAME>_URL`` otherwise."""
    import httpx

    from services.common.errors import BTPError
    from services.common.startup import StartupError, reason

    try:
        client.health()
    except (httpx.HTTPError, BTPError) as exc:
        why = exc.message if isinstance(exc, BTPError) else reason(exc)
        raise StartupError(f"the {name} service at {url} does not answer: {why}", f"BTP_{name.upper()}_URL") from exc


def embedded_engine(generator: GeneratorClient) -> Any:
    """The engine behind an embedded generator client (None for a remote one)."""
    app = getattr(generator.http, "app", None)
    state = getattr(app, "state", None)
    return getattr(state, "engine", None) if state is not None else None


class InProcessTrainer:
    """Training in this process: ``run_job`` with the run's buffer client; checkpoints in the run folder.

    ``before_training`` (the embedded generator's ``park``) runs first: the generator is idle while the
    driver trains, and its copy of the weights need not sit beside the trainer's weights, gradients and
    AdamW state; the driver's ``POST /v1/weights`` with the new checkpoint loads it again (a failed job
    leaves it to reload the old weights on its next request).
    """

    def __init__(self, buffer: BufferClient, checkpoints: Path, data_dir: Path, device: str = "auto",
                 before_training: Any = None) -> None:
        self.buffer, self.checkpoints, self.data_dir, self.device = buffer, checkpoints, data_dir, device
        self.before_training = before_training

    def train(
        self, job: JobCreate, *, round_: int, reporter: Reporter, label: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        from services.trainer.training import run_job

        reporter.phase(f"round {round_}: fine-tuning ({job.steps} steps, n={job.batch_size})", job.steps)

        def on_step(point: LossPoint) -> None:
            reporter.advance(1)

        from services.models import release_memory

        out = self.checkpoints / (label or f"round_{round_}")
        if self.before_training is not None:
            self.before_training()
        try:
            result = run_job(job, buffer=self.buffer, output_dir=out, on_step=on_step, device=self.device,
                             data_dir=self.data_dir)  # fmt: skip
        finally:
            release_memory()  # the trainer's weights, gradients and AdamW state, before the generator loads more
        if result.checkpoint is None:
            raise UpstreamError(f"training of round {round_} ended {result.status} without a checkpoint")
        return str(result.checkpoint), [p.model_dump() for p in result.loss_history]


class RemoteTrainer:
    """Training through the trainer API (Celery worker); polls the job to its end.

    Jobs name no service URL: the trainer calls the buffer and generator it is configured with
    (``BTP_BUFFER_URL``, ``BTP_GENERATOR_URL``), which may differ from this driver's spelling of them
    (``http://buffer:8003`` inside Docker, ``http://127.0.0.1:8003`` on the host).
    """

    def __init__(self, client: TrainerClient, poll_s: float = 1.0) -> None:
        self.client, self.poll_s = client, poll_s

    def train(
        self, job: JobCreate, *, round_: int, reporter: Reporter, label: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        reporter.phase(f"round {round_}: fine-tuning on the trainer ({job.steps} steps)", job.steps)
        created = self.client.create_job(job)
        seen = 0
        while True:
            out = self.client.get_job(created.id)
            if out.progress.step > seen:
                reporter.advance(out.progress.step - seen)
                seen = out.progress.step
            if out.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(self.poll_s)
        if out.status != "succeeded" or not out.checkpoint:
            raise UpstreamError(f"trainer job {out.id} ended {out.status}: {out.error or 'no checkpoint'}")
        return out.checkpoint, [p.model_dump() for p in out.loss_history]


def open_judge(stack: ExitStack, settings: Settings) -> JudgeClient:
    """The configured judge: ``BTP_JUDGE_URL`` when set, else in-process."""
    if settings.judge_url:
        client = JudgeClient(settings.judge_url, token=settings.api_token, timeout=settings.service_timeout_s,
                             retry_s=settings.service_retry_s, split=settings.judge_split,
                             parallel=settings.judge_parallel)  # fmt: skip
        stack.callback(client.close)
        return client
    return embedded_judge(stack, settings)


def open_generator(stack: ExitStack, settings: Settings, model: str, checkpoints: Path) -> GeneratorClient:
    """The configured generator: ``BTP_GENERATOR_URL`` when set (serving whatever it serves until told
    otherwise), else in-process serving ``model``."""
    if settings.generator_url:
        # several comma-separated URLs: one replica per GPU, spread over client-side
        client = generator_client(settings.generator_url, token=settings.api_token,
                                  timeout=settings.service_timeout_s, retry_s=settings.service_retry_s)  # fmt: skip
        stack.callback(client.close)
        return client
    return embedded_generator(stack, settings, model, checkpoints)


def check_trainer_reaches_buffer(settings: Settings) -> None:
    """A remote trainer needs a remote buffer (it cannot reach one inside this process)."""
    if settings.trainer_url and not settings.buffer_url:
        raise ValidationError(
            "BTP_TRAINER_URL is set but BTP_BUFFER_URL is not: a remote trainer cannot reach an "
            "in-process buffer; set both (or neither)",
            param="trainer_url",
        )


def open_trainer(
    settings: Settings, buffer: BufferClient, checkpoints: Path, device: str = "auto",
    generator: GeneratorClient | None = None,
) -> RemoteTrainer | InProcessTrainer:
    """The configured trainer: the trainer API (``BTP_TRAINER_URL``; it reads the buffer service it is
    configured with) or this process, replaying ``buffer``."""
    if settings.trainer_url:
        check_trainer_reaches_buffer(settings)
        client = TrainerClient(settings.trainer_url, token=settings.api_token, timeout=settings.service_timeout_s,
                               retry_s=settings.service_retry_s)  # fmt: skip
        return RemoteTrainer(client, settings.poll_interval_s)
    # an embedded generator lends its memory to training (see InProcessTrainer)
    engine = embedded_engine(generator) if generator is not None else None
    return InProcessTrainer(buffer, checkpoints, settings.data_dir, device=device,
                            before_training=engine.park if engine is not None else None)  # fmt: skip


@contextmanager
def open_services(
    settings: Settings, *, model: str, buffer_database_url: str, checkpoints: Path
) -> Iterator[Services]:
    """Clients for every service: remote where a URL is set, embedded otherwise."""
    with ExitStack() as stack:
        quiet_embedded_logs(settings)
        check_trainer_reaches_buffer(settings)
        remote = [n for n in ("generator", "judge", "buffer", "trainer") if getattr(settings, f"{n}_url")]
        buffer = open_buffer(stack, settings, buffer_database_url)
        judge = open_judge(stack, settings)
        generator = open_generator(stack, settings, model, checkpoints)
        trainer = open_trainer(settings, buffer, checkpoints, generator=generator)
        mode = "embedded" if not remote else ("remote" if len(remote) == 4 else "mixed: remote " + ",".join(remote))
        yield Services(generator=generator, judge=judge, buffer=buffer, trainer=trainer, mode=mode)
