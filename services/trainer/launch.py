"""Run one training job as a plain process, or as one rank of a multi-GPU launch.

One GPU (or CPU)::

    python -m services.trainer.launch --config job.json --output-dir runs/job1 [--buffer-url URL]

Several GPUs, one job: every process runs the same loop; rank 0 draws each minibatch (the one a single
process would draw) and shares it, each process trains on its share, gradients are averaged by DDP (the
same update as one process), rank 0 writes checkpoints and TensorBoard::

    torchrun --standalone --nproc_per_node=8 -m services.trainer.launch --config job.json --output-dir DIR
    accelerate launch --num_processes 8 -m services.trainer.launch --config job.json --output-dir DIR

A job stored by the API (``--job-id``) records its progress in the job table from rank 0, exactly like
the Celery task (``BTP_DATABASE_URL``, ``BTP_DATA_DIR`` ... from the environment)::

    torchrun --standalone --nproc_per_node=8 -m services.trainer.launch --job-id <id>
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from services.common.schemas.trainer import JobCreate

from .settings import Settings


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_config(config: Path, output_dir: Path, settings: Settings, buffer_url: str | None) -> int:
    """Run a job described by a JSON file (no job table)."""
    from .executor import buffer_client
    from .training import run_job

    job = JobCreate.model_validate_json(config.read_text())
    if buffer_url:  # the operator's command line configures the worker; a job file never redirects it
        settings = settings.model_copy(update={"buffer_url": buffer_url})
    with buffer_client(job, settings) as buffer:
        result = run_job(
            job, buffer=buffer, output_dir=output_dir, device=settings.device, data_dir=settings.data_dir,
            on_step=lambda p: print(json.dumps(p.model_dump()), flush=True),
        )
    if _rank() == 0:
        print(json.dumps({"status": result.status, "step": result.step, "checkpoint": str(result.checkpoint)}))
    return 0


def run_stored(job_id: str, settings: Settings) -> int:
    """Run a job of the job table: rank 0 records it, the other ranks only train."""
    from .executor import execute_job

    if _rank() == 0:
        state = execute_job(job_id, settings)
        return 0 if state in ("succeeded", "cancelled", "skipped") else 1
    from .db import make_engine, make_sessionmaker
    from .executor import buffer_client, job_dir
    from .jobs import get_job
    from .training import run_job

    with make_sessionmaker(make_engine(settings.resolved_database_url()))() as session:
        job = get_job(session=session, job_id=job_id).config
    with buffer_client(job, settings) as buffer:
        run_job(job, buffer=buffer, output_dir=job_dir(settings, job_id), device=settings.device,
                data_dir=settings.data_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m services.trainer.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, help="JSON file of a job (the body of POST /v1/jobs)")
    what.add_argument("--job-id", help="a job stored by the trainer API")
    parser.add_argument("--output-dir", type=Path, help="checkpoint folder (--config); default <checkpoints>/<name>")
    parser.add_argument("--buffer-url", help="buffer service URL (default: BTP_BUFFER_URL, else embedded)")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        if args.job_id:
            return run_stored(args.job_id, settings)
        out = args.output_dir or settings.resolved_checkpoints_dir() / args.config.stem
        return run_config(args.config, out, settings, args.buffer_url)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
