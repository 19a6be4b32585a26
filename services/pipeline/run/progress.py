"""``progress.json`` of a run folder: the phase running now, for ``btp dashboard`` to watch a run live.

:class:`FolderReporter` wraps the run's reporter (rich bars, or silent) and rewrites
``<run>/progress.json`` atomically, at most every ``interval_s`` seconds and at every phase change:
``{"phase": "round 1: beam search (k=3)", "done": 5, "total": 16, "phase_started_at": ..., "updated_at": ...,
"phases": [{"name": ..., "total": ..., "done": ..., "seconds": ...}, ...], "log": [last messages]}``, and
for an async run ``"async"``: versions, lag, passes, waits (:meth:`FolderReporter.extra`). Thread-safe: an
async run reports from several threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from .folder import write_json
from .steps import Reporter

LOG_LINES = 20


class FolderReporter:
    """A :class:`Reporter` that also records progress in a run folder."""

    def __init__(self, inner: Reporter, path: Path | None, *, interval_s: float = 0.5) -> None:
        self.inner, self.path, self.interval_s = inner, path, interval_s
        self.state: dict[str, Any] = {"phase": None, "done": 0, "total": 0, "phases": [], "log": []}
        self._written = 0.0
        self._lock = threading.RLock()

    def _write(self, force: bool = False) -> None:
        now = time.time()
        if self.path is None or (not force and now - self._written < self.interval_s):
            return
        self._written = now
        with self._lock:
            self.state["updated_at"] = now
            with contextlib.suppress(OSError):  # progress is best effort: never fail a run over it
                write_json(self.path, self.state)

    def extra(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` (an async run's counters and lag), written with the next update."""
        with self._lock:
            self.state[key] = value
        self._write()

    def phase(self, name: str, total: int) -> None:
        with self._lock:
            self._phase(name, total)

    def _phase(self, name: str, total: int) -> None:
        now = time.time()
        if self.state["phases"]:
            last = self.state["phases"][-1]
            last["done"], last["seconds"] = self.state["done"], round(now - self.state["phase_started_at"], 3)
        self.state.update(phase=name, done=0, total=total, phase_started_at=now)
        self.state["phases"].append({"name": name, "total": total, "done": 0, "seconds": None})
        self.inner.phase(name, total)
        self._write(force=True)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._advance(n)

    def _advance(self, n: int) -> None:
        self.state["done"] += n
        if self.state["phases"]:
            self.state["phases"][-1]["done"] = self.state["done"]
        self.inner.advance(n)
        self._write(force=self.state["done"] >= self.state["total"])

    def log(self, message: str) -> None:
        with self._lock:
            self.state["log"] = [*self.state["log"], message][-LOG_LINES:]
            self.inner.log(message)
            self._write()

    def close(self) -> None:
        """Close the last phase and write the final state."""
        if self.state["phases"]:
            last = self.state["phases"][-1]
            if last["seconds"] is None:
                last["seconds"] = round(time.time() - self.state["phase_started_at"], 3)
        self._write(force=True)
