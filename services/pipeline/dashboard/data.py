"""What the dashboard shows, as plain JSON: run folders (embedded or not) and the services' read APIs.

Pure reading, no FastAPI: :func:`list_runs` and :func:`run_detail` read ``<BTP_DATA_DIR>/runs/<name>/``
(config, state, ``progress.json`` and from it the run's status: running only while its process lives,
see :func:`~services.pipeline.run.progress.run_status`; per-round metrics) and, for an embedded run, its own buffer
(``buffer.sqlite3``) through the buffer's app in-process; :func:`services_overview` asks each configured
service (``BTP_*_URL``, with ``BTP_API_TOKEN``) for its health and read endpoints: the buffer's stats,
programs per round and source and last minibatches, the trainer's jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from services.common.client import BufferClient, SyncClient, TrainerClient
from services.common.spread import generator_client

from ..run.progress import run_status

TRAINER_JOBS = 8


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _run_dirs(runs_dir: Path) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    dirs = [p for p in runs_dir.iterdir() if (p / "config.json").is_file()]
    return sorted(dirs, key=lambda p: (p / "state.json").stat().st_mtime if (p / "state.json").exists() else 0.0,
                  reverse=True)


def _summary(path: Path) -> dict[str, Any]:
    config = _read(path / "config.json") or {}
    state = _read(path / "state.json") or {}
    progress = _read(path / "progress.json")
    keys = ("model", "datasets", "rounds", "k", "alpha", "scheme", "possibility", "n", "steps")
    return {
        "name": path.name,
        "config": {k: config.get(k) for k in keys},
        "done": state.get("done", []),
        "finished_at": state.get("finished_at"),
        "status": run_status(state.get("finished_at"), progress),
        "checkpoint": state.get("checkpoint"),
        "progress": progress,
        "embedded_buffer": (path / "buffer.sqlite3").exists(),
    }


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run folder, most recently active first."""
    return [_summary(p) for p in _run_dirs(runs_dir)]


def _round(metrics: dict[str, Any]) -> dict[str, Any]:
    ev = metrics.get("eval") or {}
    train = metrics.get("train") or {}
    return {
        "round": metrics.get("round"),
        "eval": {k: ev.get(k) for k in ("tasks", "pass_rate", "accuracy", "seconds")} if ev else None,
        "loss_history": train.get("loss_history") or [],
        "replay": metrics.get("replay"),
    }


BufferOpener = Callable[[Path], BufferClient | None]


def run_detail(runs_dir: Path, name: str, open_buffer: BufferOpener) -> dict[str, Any] | None:
    """One run: summary, per-round curves and losses, and its own buffer when it is embedded."""
    path = runs_dir / name
    if not (path / "config.json").is_file() or Path(name).name != name:
        return None
    out = _summary(path)
    files = sorted((path / "metrics").glob("round_*.json"), key=lambda p: int(p.stem.removeprefix("round_")))
    out["rounds"] = [_round(m) for m in (_read(p) for p in files) if isinstance(m, dict)]
    client = open_buffer(path) if out["embedded_buffer"] else None
    out["buffer"] = buffer_view(client) if client is not None else None
    return out


def buffer_view(client: BufferClient) -> dict[str, Any]:
    """The buffer's stats, programs per round and source, and its last minibatches."""
    return {
        "stats": client.stats().model_dump(mode="json"),
        "groups": client.stats_groups().model_dump(mode="json")["groups"],
        "recent": client.recent_samples(10).model_dump(mode="json")["items"],
    }


def _health(client: SyncClient) -> dict[str, Any]:
    try:
        return {"ok": True, **client.health()}
    except Exception as exc:  # a service that is down is a red badge, not a failed page
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def services_overview(urls: dict[str, str | None], token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """Health of each configured service, plus the buffer's and the trainer's read APIs."""
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        for name, url in urls.items():
            if not url:
                out[name] = {"url": None, "health": None}
                continue
            cls = {"buffer": BufferClient, "trainer": TrainerClient}.get(name, SyncClient)
            if name == "generator":  # a comma-separated list: every replica's health
                client = stack.enter_context(generator_client(url, token=token, timeout=timeout_s))
            else:
                client = stack.enter_context(cls(url, token=token, timeout=timeout_s))
            entry: dict[str, Any] = {"url": url, "health": _health(client)}
            if entry["health"]["ok"]:
                try:
                    if isinstance(client, BufferClient):
                        entry["buffer"] = buffer_view(client)
                    elif isinstance(client, TrainerClient):
                        jobs = client.list_jobs().items
                        jobs.sort(key=lambda j: j.created_at, reverse=True)
                        entry["jobs"] = [j.model_dump(mode="json", exclude={"config"}) | {
                            "learning_rate": j.config.learning_rate, "batch_size": j.config.batch_size}
                            for j in jobs[:TRAINER_JOBS]]
                except Exception as exc:  # keep the health badge; say what failed
                    entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
            out[name] = entry
    return out
