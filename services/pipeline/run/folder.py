"""The run folder: ``BTP_DATA_DIR/runs/<name>/``.

```
config.json             the RunConfig
state.json              finished steps ("eval:0", "sample:1", "judge:1", "train:1", "eval:1", ...) and
                        the checkpoint the generator serves; written atomically after every step
metrics/round_<r>.json  evaluation on the held-out split (r = 0 before the first round), buffer stats,
                        the sampled minibatch's distribution, timings
checkpoints/round_<r>/  weights after round r
buffer.sqlite3          the embedded buffer (absent when a remote buffer is used)
```
A crashed run resumes with `btp run --resume <name>`: finished steps are skipped, and every step is
idempotent (experiences are deduplicated by the buffer), so re-running a half-done step is safe.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .config import RunConfig


class RunState(BaseModel):
    """Progress of a run."""

    done: list[str] = Field(default_factory=list)
    checkpoint: str | None = None
    version: int = 0  # async: weights versions published (the checkpoint's version)
    trained_programs: int = 0  # async: programs trained on so far (steps x n)
    passes: int = 0  # async: passes over the train tasks sampled to the end
    seconds: float = 0.0  # async: wall seconds of the run's earlier sessions (a resumed run adds to it)
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


class RunFolder:
    """Reads and writes one run's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, runs_dir: Path, config: RunConfig) -> RunFolder:
        """A new run folder; refuses an existing run of the same name (use --resume)."""
        path = runs_dir / config.name
        if (path / "config.json").exists():
            raise FileExistsError(f"run {config.name!r} exists at {path}; resume it with --resume {config.name}")
        folder = cls(path)
        (path / "metrics").mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", config.model_dump(mode="json"))
        folder.save_state(RunState())
        return folder

    @classmethod
    def open(cls, runs_dir: Path, name: str) -> RunFolder:
        """An existing run, by name or path."""
        path = Path(name) if Path(name).is_dir() and (Path(name) / "config.json").exists() else runs_dir / name
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no run {name!r} under {runs_dir}")
        return cls(path)

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> RunConfig:
        return RunConfig.model_validate_json((self.path / "config.json").read_text(encoding="utf-8"))

    def state(self) -> RunState:
        return RunState.model_validate_json((self.path / "state.json").read_text(encoding="utf-8"))

    def save_state(self, state: RunState) -> None:
        write_json(self.path / "state.json", state.model_dump(mode="json"))

    def mark(self, step: str, *, checkpoint: str | None = None) -> None:
        """Record a finished step (and the checkpoint now served, if it changed)."""
        state = self.state()
        if step not in state.done:
            state.done.append(step)
        if checkpoint is not None:
            state.checkpoint = checkpoint
        self.save_state(state)

    def is_done(self, step: str) -> bool:
        return step in self.state().done

    def checkpoint_dir(self, round_: int) -> Path:
        return self.path / "checkpoints" / f"round_{round_}"

    def buffer_database_url(self) -> str:
        return f"sqlite:///{self.path / 'buffer.sqlite3'}"

    def metrics_path(self, round_: int) -> Path:
        return self.path / "metrics" / f"round_{round_}.json"

    def save_metrics(self, round_: int, data: dict[str, Any]) -> None:
        """Merge ``data`` into the round's metrics file."""
        path = self.metrics_path(round_)
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"round": round_}
        current.update(data)
        write_json(path, current)

    def metrics(self) -> list[dict[str, Any]]:
        """Every round's metrics, in round order."""
        files = sorted(
            (self.path / "metrics").glob("round_*.json"), key=lambda p: int(p.stem.removeprefix("round_"))
        )
        return [json.loads(p.read_text(encoding="utf-8")) for p in files]
