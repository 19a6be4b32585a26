"""`bench/trainer.py --gpus N` runs end to end on CPU (gloo): 1 and 2 processes, tokens/s and the ratio.

A smoke test of the measurement's code path (torchrun launch, DDP step on the shared minibatch, result
collection), not of any speed: no number is compared with a threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_scaling_mode_runs_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/trainer.py", "--preset", "cpu", "--gpus", "2", "--steps", "2", "--warmup", "1",
           "--batch-size", "4", "--max-prompt", "24", "--max-program", "16", "--json", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = json.loads(out.read_text())["tiny"]
    assert sorted(runs) == ["1", "2"]
    assert [runs[n]["processes"] for n in ("1", "2")] == [1, 2]
    assert runs["1"]["global_batch"] == runs["2"]["global_batch"] == 4
    assert runs["1"]["scaling"] == 1.0
    assert runs["2"]["scaling"] == pytest.approx(runs["2"]["median_tokens_per_s"] / runs["1"]["median_tokens_per_s"])
    # both counted the same global minibatches: the same tokens per step
    assert runs["1"]["step_tokens"] == runs["2"]["step_tokens"]
    lines = [x for x in r.stdout.splitlines() if x.startswith("tiny")]
    assert len(lines) == 2 and "2 proc" in lines[1] and "scaling" in lines[1]
