"""The same job under ``torchrun`` with two processes (CPU, gloo): DDP, per-rank sampling, rank-0 checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.client import BufferClient
from services.trainer import checkpoint as ckpt

from .helpers import buffer_service

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_torchrun_two_processes(tiny_llama: Path, buffer: BufferClient, tmp_path: Path) -> None:
    job = {
        "model": str(tiny_llama), "batch_size": 8, "micro_batch_size": 2, "steps": 4, "learning_rate": 3e-3,
        "checkpoint_every": 2, "sample": {"dataset": "toy"},
    }
    config = tmp_path / "job.json"
    config.write_text(json.dumps(job))
    out = tmp_path / "ddp"
    db = f"sqlite:///{tmp_path / 'buffer.sqlite3'}"  # the file the `buffer` fixture filled
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", BTP_TRAINER_DEVICE="cpu", BTP_DATA_DIR=str(tmp_path),
               BTP_MODEL_ROOTS=os.environ.get("BTP_MODEL_ROOTS", ""))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "services.trainer.launch", "--config", str(config), "--output-dir", str(out),
    ]
    # each rank samples from the buffer service over HTTP, as a worker does
    with buffer_service(db, tmp_path, tmp_path / "buffer.log") as url:
        env["BTP_BUFFER_URL"] = url
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4]  # printed by rank 0 only
    assert lines[-1]["status"] == "succeeded" and lines[-1]["checkpoint"] == str(out / "step-4")
    assert [c.step for c in ckpt.list_checkpoints(out)] == [2, 4]
