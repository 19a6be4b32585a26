"""Progress of long commands: on the console (:func:`console_reporter`: rich bars on a terminal, else a line
per phase with counts and rates, for logs) and in ``progress.json`` of a run folder (the phase running now,
for ``btp dashboard`` to watch a run live).

:class:`FolderReporter` wraps the run's reporter (rich bars, or silent) and rewrites
``<run>/progress.json`` atomically, at most every ``interval_s`` seconds and at every phase change:
``{"phase": "round 1: beam search (k=3)", "done": 5, "total": 16, "phase_started_at": ..., "updated_at": ...,
"phases": [{"name": ..., "total": ..., "done": ..., "seconds": ...}, ...], "log": [last messages],
"status": "running" | "finished" | "failed" | "interrupted", "error": ..., "pid": ..., "host": ...,
"heartbeat_s": ...}``.

While the run goes (:meth:`FolderReporter.start` to :meth:`FolderReporter.close`) a daemon thread rewrites
the file every ``heartbeat_s`` seconds, so a reader can tell a live run from one whose process died
without a word (killed, out of memory): :func:`run_status` says ``stopped`` when the process is gone
(same host) or the heartbeat is older than :data:`STALE_S`. An async run also records ``"async"``: versions,
lag, passes, waits (:meth:`FolderReporter.extra`). Thread-safe: an async run reports from several threads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .folder import write_json
from .steps import Reporter

LOG_LINES = 20
HEARTBEAT_S = 5.0
STALE_S = 30.0  # a heartbeat older than this: the run's process is gone


class RichReporter:
    """One rich progress bar per phase."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(name, total=max(total, 1) if total else 0)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


class LineReporter:
    """Progress as plain lines, for logs (output that is not a terminal): a line when a phase starts, one
    every ``every_s`` seconds while it runs, and one when it ends, each with counts and a rate; never
    wrapped (a log line is one line, however long a run folder's path makes it)."""

    def __init__(self, out: Console, every_s: float = 10.0) -> None:
        self.out, self.every_s = out, every_s
        self.name: str | None = None
        self.total = self.done = 0
        self.start = self.last = 0.0

    def _line(self, what: str) -> None:
        seconds = time.perf_counter() - self.start
        rate = self.done / seconds if seconds > 0 else 0.0
        self.out.print(f"{self.name}: {what} {self.done}/{self.total} in {seconds:.1f}s ({rate:.2f}/s)",
                       highlight=False, markup=False, soft_wrap=True)  # fmt: skip

    def phase(self, name: str, total: int) -> None:
        self.finish()
        self.name, self.total, self.done = name, total, 0
        self.start = self.last = time.perf_counter()
        self.out.print(f"{name}: started, {total} to do", highlight=False, markup=False, soft_wrap=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            self._line("at")

    def log(self, message: str) -> None:
        self.out.print(message, highlight=False, markup=False, soft_wrap=True)

    def finish(self) -> None:
        """End the running phase with its summary line."""
        if self.name is not None:
            self._line("done")
            self.name = None


@contextlib.contextmanager
def console_reporter(out: Console) -> Iterator[Reporter]:
    """Rich bars on a terminal, else a line per phase (the last phase's summary line when done)."""
    if out.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=out) as progress:  # fmt: skip
            yield RichReporter(progress)
        return
    lines = LineReporter(out)
    try:
        yield lines
    finally:
        lines.finish()


class FolderReporter:
    """A :class:`Reporter` that also records progress in a run folder."""

    def __init__(self, inner: Reporter, path: Path | None, *, interval_s: float = 0.5,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.inner, self.path, self.interval_s, self.heartbeat_s = inner, path, interval_s, heartbeat_s
        self.state: dict[str, Any] = {"phase": None, "done": 0, "total": 0, "phases": [], "log": [],
                                      "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                      "heartbeat_s": heartbeat_s}
        self._written = 0.0
        self._lock = threading.RLock()  # the heartbeat thread and an async run's loops write too
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _write(self, force: bool = False) -> None:
        with self._lock:
            now = time.time()
            if self.path is None or (not force and now - self._written < self.interval_s):
                return
            self._written = now
            self.state["updated_at"] = now
            with contextlib.suppress(OSError):  # progress is best effort: never fail a run over it
                write_json(self.path, self.state)

    def start(self) -> None:
        """Mark the run as running (this process) and keep the heartbeat until :meth:`close`."""
        if self.path is None or self._beat is not None:
            return
        self.state.update(status="running", error=None, pid=os.getpid(), host=socket.gethostname())
        self._write(force=True)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="btp-progress", daemon=True)
        self._beat.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """:meth:`start`, then :meth:`close` with how the block ended (finished, failed, interrupted)."""
        self.start()
        try:
            yield
        except KeyboardInterrupt:
            self.close("interrupted")
            raise
        except BaseException as exc:
            self.close("failed", f"{type(exc).__name__}: {exc}"[:500])
            raise
        self.close("finished")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._write(force=True)

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

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Close the last phase, stop the heartbeat and write the final state (``finished``, ``failed`` with
        the error, or ``interrupted``)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
            self._beat = None
        if self.state["phases"]:
            last = self.state["phases"][-1]
            if last["seconds"] is None:
                last["seconds"] = round(time.time() - self.state["phase_started_at"], 3)
        self.state.update(status=status, error=error)
        self._write(force=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def run_status(finished_at: str | None, progress: dict[str, Any] | None, now: float | None = None) -> str:
    """``finished``, ``running``, ``failed``, ``interrupted``, ``stopped`` (the process died without a word,
    or a run from before heartbeats that never finished) or ``not started``, from a run's state and
    ``progress.json``."""
    if finished_at:
        return "finished"
    if not isinstance(progress, dict):  # created, never started (a sweep's later runs wait their turn)
        return "not started"
    status = progress.get("status")
    if status in ("failed", "interrupted"):
        return str(status)
    if status != "running":  # written before statuses existed, or "finished" without finished_at
        return "stopped"
    pid, host = progress.get("pid"), progress.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
        return "stopped"
    age = (now if now is not None else time.time()) - float(progress.get("updated_at") or 0.0)
    stale = max(STALE_S, 6 * float(progress.get("heartbeat_s") or HEARTBEAT_S))
    return "running" if age < stale else "stopped"
