"""The services a run drives: remote (URLs from ``BTP_*_URL``) or embedded (the same apps in-process).

Embedded means each service's real FastAPI app (``create_app(settings)``) behind Starlette's
``TestClient`` (an ``httpx.Client``; entered as a context manager so the lifespans run), wrapped by the
same typed clients as a remote stack, so the driver cannot tell the two apart. The buffer then lives in
a SQLite file inside the run folder, and training runs in-process through
``services.trainer.training.run_job``; with ``BTP_TRAINER_URL`` set, jobs go to the trainer API (and its
Celery worker) instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from services.common.client import BufferClient, GeneratorClient, JudgeClient, TrainerClient
from services.common.errors import UpstreamError, ValidationError
from services.common.schemas.trainer import JobCreate, LossPoint

from .driver import Reporter, Services
from .settings import Settings


def quiet_embedded_logs() -> None:
    """In-process services log at WARNING unless BTP_LOG_LEVEL says otherwise: the CLI shows progress bars."""
    import logging

    level = os.environ.get("BTP_LOG_LEVEL", "WARNING").upper()
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


def _log_level() -> str:
    return os.environ.get("BTP_LOG_LEVEL", "WARNING")


def _embedded_client(stack: ExitStack, app: Any) -> Any:
    from fastapi.testclient import TestClient

    return stack.enter_context(TestClient(app, raise_server_exceptions=False))


def embedded_generator(stack: ExitStack, settings: Settings, model: str) -> GeneratorClient:
    """The generator app in-process, serving ``model``."""
    from services.generator.app import create_app
    from services.generator.settings import Settings as GeneratorSettings

    gs = GeneratorSettings(model=model, data_dir=settings.data_dir, log_level=_log_level())
    return GeneratorClient(client=_embedded_client(stack, create_app(gs)))


def embedded_judge(stack: ExitStack, settings: Settings) -> JudgeClient:
    """The judge app in-process (its sandboxes are real bubblewrap containers)."""
    from services.judge.app import create_app
    from services.judge.settings import Settings as JudgeSettings

    return JudgeClient(client=_embedded_client(stack, create_app(JudgeSettings(data_dir=settings.data_dir, log_level=_log_level()))))


def embedded_buffer(stack: ExitStack, settings: Settings, database_url: str) -> BufferClient:
    """The buffer app in-process on ``database_url`` (migrated on start)."""
    from services.buffer.app import create_app
    from services.buffer.settings import Settings as BufferSettings

    bs = BufferSettings(database_url=database_url, data_dir=settings.data_dir, log_level=_log_level())
    return BufferClient(client=_embedded_client(stack, create_app(bs)))


class InProcessTrainer:
    """Training in this process: ``run_job`` with the run's buffer client; checkpoints in the run folder."""

    def __init__(self, buffer: BufferClient, checkpoints: Path, data_dir: Path, device: str = "auto") -> None:
        self.buffer, self.checkpoints, self.data_dir, self.device = buffer, checkpoints, data_dir, device

    def train(self, job: JobCreate, *, round_: int, reporter: Reporter) -> tuple[str, list[dict[str, Any]]]:
        from services.trainer.training import run_job

        reporter.phase(f"round {round_}: fine-tuning ({job.steps} steps, n={job.batch_size})", job.steps)

        def on_step(point: LossPoint) -> None:
            reporter.advance(1)

        out = self.checkpoints / f"round_{round_}"
        result = run_job(job, buffer=self.buffer, output_dir=out, on_step=on_step, device=self.device,
                         data_dir=self.data_dir)  # fmt: skip
        if result.checkpoint is None:
            raise UpstreamError(f"training of round {round_} ended {result.status} without a checkpoint")
        return str(result.checkpoint), [p.model_dump() for p in result.loss_history]


class RemoteTrainer:
    """Training through the trainer API (Celery worker); polls the job to its end."""

    def __init__(self, client: TrainerClient, poll_s: float = 1.0, buffer_url: str | None = None) -> None:
        self.client, self.poll_s, self.buffer_url = client, poll_s, buffer_url

    def train(self, job: JobCreate, *, round_: int, reporter: Reporter) -> tuple[str, list[dict[str, Any]]]:
        reporter.phase(f"round {round_}: fine-tuning on the trainer ({job.steps} steps)", job.steps)
        created = self.client.create_job(job.model_copy(update={"buffer_url": self.buffer_url}))
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


@contextmanager
def open_services(
    settings: Settings, *, model: str, buffer_database_url: str, checkpoints: Path
) -> Iterator[Services]:
    """Clients for every service: remote where a URL is set, embedded otherwise."""
    token, timeout, retry = settings.api_token, settings.service_timeout_s, settings.service_retry_s
    with ExitStack() as stack:
        quiet_embedded_logs()
        if settings.trainer_url and not settings.buffer_url:
            raise ValidationError(
                "BTP_TRAINER_URL is set but BTP_BUFFER_URL is not: a remote trainer cannot reach an "
                "in-process buffer; set both (or neither)",
                param="trainer_url",
            )
        remote = [n for n in ("generator", "judge", "buffer", "trainer") if getattr(settings, f"{n}_url")]
        if settings.buffer_url:
            buffer = BufferClient(settings.buffer_url, token=token, timeout=timeout, retry_s=retry)
        else:
            buffer = embedded_buffer(stack, settings, buffer_database_url)
        if settings.judge_url:
            judge = JudgeClient(settings.judge_url, token=token, timeout=timeout, retry_s=retry)
        else:
            judge = embedded_judge(stack, settings)
        if settings.generator_url:
            generator = GeneratorClient(settings.generator_url, token=token, timeout=timeout, retry_s=retry)
        else:
            generator = embedded_generator(stack, settings, model)
        trainer: RemoteTrainer | InProcessTrainer
        if settings.trainer_url:
            trainer = RemoteTrainer(TrainerClient(settings.trainer_url, token=token, timeout=timeout, retry_s=retry),
                                    settings.poll_interval_s, settings.buffer_url)  # fmt: skip
        else:
            trainer = InProcessTrainer(buffer, checkpoints, settings.data_dir)
        mode = "embedded" if not remote else ("remote" if len(remote) == 4 else "mixed: remote " + ",".join(remote))
        yield Services(generator=generator, judge=judge, buffer=buffer, trainer=trainer, mode=mode)
