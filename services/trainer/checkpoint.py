"""Atomic, versioned, resumable checkpoints: ``<root>/step-N`` (Hugging Face folder or LoRA adapter).

A checkpoint is written into a hidden temporary folder beside its final place (``.tmp-step-N-<rand>``),
every file is flushed to disk, and only then is the folder renamed to ``step-N``: a reader (or a worker
restarted after SIGKILL) sees either the complete checkpoint or none. Temporary folders left behind by
a killed writer are removed on the next start. Besides the model files each checkpoint holds
``trainer_state.pt`` (optimizer state, RNG states, step) and ``btp_checkpoint.json`` (what it is), so a
job delivered again resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"
META_FILE = "btp_checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk."""

    step: int
    path: Path
    kind: str


def step_dir(root: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return root / f"step-{step}"


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under ``root``, oldest first."""
    found: list[CheckpointInfo] = []
    if not root.is_dir():
        return found
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if not m or not child.is_dir():
            continue
        meta_path = child / META_FILE
        if not (child / STATE_FILE).is_file() or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        found.append(CheckpointInfo(step=int(m.group(1)), path=child, kind=str(meta.get("kind", "full"))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> CheckpointInfo | None:
    """The newest complete checkpoint, if any."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def remove_partial(root: Path) -> list[Path]:
    """Delete temporary folders a killed writer left behind; returns what was removed."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        if child.name.startswith(".tmp-step-"):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for child in path.rglob("*"):
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any | None,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 0,
    extra_files: tuple[Path, ...] = (),
) -> Path:
    """Write ``root/step-N`` atomically; ``model`` is a HF model or a PEFT model (adapter only)."""
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-step-{step}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for extra in extra_files:
            if extra.is_file():
                shutil.copyfile(extra, tmp / extra.name)
        torch.save(trainer_state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"step": step, **meta}, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        if final.exists():
            # The same step written again (a redelivered attempt that got this far): the old one is
            # complete too, so swap it out whole rather than merging files.
            old = root / f".tmp-step-{step}-old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep > 0:
        for old_ckpt in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old_ckpt.path, ignore_errors=True)
    return final


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The optimizer/RNG/step state of a checkpoint."""
    state: dict[str, Any] = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    return state
