"""`btp stack up`: the full stack without Docker, as separate processes on this machine.

PostgreSQL and Redis are used where they run and started (with this machine's commands) where they do
not; then the four services (uvicorn on each ``create_app`` factory) and a Celery worker start, each in
its own session with its log under ``BTP_DATA_DIR/stack/<name>.log``. The stack is up when every
``/health`` answers 200 and the worker logged ``ready``. SIGINT/SIGTERM stop the children in reverse
order (SIGTERM, then SIGKILL after a grace period); if one child dies, the others are stopped too.

``generators`` > 1 starts that many generator replicas, one GPU each: replica ``i`` listens on the
generator port + 10·i and sees only the ``i``-th visible GPU (``CUDA_VISIBLE_DEVICES``, taken from the
parent's list when it has one); every other child gets ``BTP_GENERATOR_URL`` as the comma-separated list
of the replicas, which the clients spread requests over (:mod:`services.common.spread`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.common.client import SyncClient
from services.common.errors import UnavailableError
from services.common.settings import DASHBOARD_PORT, DEFAULT_PORTS, DEFAULT_TRAIN_QUEUE

SERVICES = ("buffer", "judge", "generator", "trainer")
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/btp"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_postgres(database_url: str, log: list[str]) -> None:
    """Start the local PostgreSQL cluster if the URL is local and nothing listens; create the database."""
    parts = urlsplit(database_url.replace("+psycopg", ""))
    if not parts.scheme.startswith("postgres"):
        return
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not port_open(host, port) and host in ("127.0.0.1", "localhost"):
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if not versions:
            raise UnavailableError(f"PostgreSQL is not running on {host}:{port} and no local cluster was found")
        log.append(f"starting PostgreSQL {versions[-1]}")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True)
        for _ in range(60):
            if port_open(host, port):
                break
            time.sleep(0.5)
    create_database(database_url)


def create_database(database_url: str) -> None:
    """CREATE DATABASE for a PostgreSQL URL when it does not exist yet."""
    import psycopg

    parts = urlsplit(database_url.replace("+psycopg", ""))
    name = parts.path.lstrip("/") or "postgres"
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_redis(redis_url: str, log: list[str]) -> None:
    """Start a local redis-server if the URL is local and nothing listens."""
    parts = urlsplit(redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if port_open(host, port):
        return
    if host not in ("127.0.0.1", "localhost") or not shutil.which("redis-server"):
        raise UnavailableError(f"Redis is not running on {host}:{port}")
    log.append("starting Redis")
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no"], check=True)  # fmt: skip
    for _ in range(40):
        if port_open(host, port):
            return
        time.sleep(0.25)
    raise UnavailableError(f"redis-server did not start on port {port}")


@dataclass
class StackConfig:
    """Where each part listens and what it uses."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {**DEFAULT_PORTS, "dashboard": DASHBOARD_PORT})
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: Path = Path.home() / ".cache" / "btp"
    model: str | None = None
    api_token: str | None = None
    queue: str = DEFAULT_TRAIN_QUEUE
    extra_env: dict[str, str] = field(default_factory=dict)
    health_timeout_s: float = 600.0
    generators: int = 1

    def __post_init__(self) -> None:
        if self.generators < 1:
            raise ValueError("generators must be at least 1")
        for i in range(1, self.generators):
            self.ports.setdefault(f"generator-{i}", self.ports["generator"] + 10 * i)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def generator_names(self) -> list[str]:
        """``generator``, then ``generator-1`` ... for the extra replicas."""
        return ["generator", *(f"generator-{i}" for i in range(1, self.generators))]

    def generator_url(self) -> str:
        """``BTP_GENERATOR_URL``: one URL, or the replicas' URLs comma-separated."""
        return ",".join(self.url(n) for n in self.generator_names())

    def child_env(self, name: str, env: dict[str, str]) -> dict[str, str]:
        """``env`` for child ``name``: with several generators, replica ``i`` sees only GPU ``i``."""
        names = self.generator_names()
        if self.generators == 1 or name not in names:
            return env
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        i = names.index(name)
        return {**env, "CUDA_VISIBLE_DEVICES": visible[i % len(visible)] if visible else str(i)}

    def env(self) -> dict[str, str]:
        """The environment every child gets: the shared BTP_* names."""
        env = dict(os.environ)
        env.update({
            "BTP_DATABASE_URL": self.database_url,
            "BTP_REDIS_URL": self.redis_url,
            "BTP_DATA_DIR": str(self.data_dir),
            "BTP_TRAINER_QUEUE": self.queue,
            **{f"BTP_{n.upper()}_URL": self.url(n) for n in SERVICES},
            "BTP_GENERATOR_URL": self.generator_url(),
        })  # fmt: skip
        if self.model:
            env["BTP_GENERATOR_MODEL"] = self.model
            if self.model.startswith(("/", "~")):  # the operator's model folder: jobs may name it too
                folder = str(Path(self.model).expanduser())
                roots = env.get("BTP_MODEL_ROOTS", "")
                env["BTP_MODEL_ROOTS"] = f"{roots}{os.pathsep}{folder}" if roots else folder
        if self.api_token:
            env["BTP_API_TOKEN"] = self.api_token
        env.update(self.extra_env)
        return env

    def commands(self) -> dict[str, list[str]]:
        """The command line of each child process."""
        py = sys.executable
        cmds = {
            name: [py, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory",
                   "--host", self.host, "--port", str(self.ports[name]), "--log-level", "warning"]
            for name in SERVICES
        }  # fmt: skip
        for name in self.generator_names()[1:]:
            cmds[name] = [py, "-m", "uvicorn", "services.generator.app:create_app", "--factory",
                          "--host", self.host, "--port", str(self.ports[name]), "--log-level", "warning"]  # fmt: skip
        if "dashboard" in self.ports:
            cmds["dashboard"] = [py, "-m", "uvicorn", "services.pipeline.dashboard.app:create_app", "--factory",
                                 "--host", self.host, "--port", str(self.ports["dashboard"]), "--log-level", "warning"]
        cmds["worker"] = [py, "-m", "celery", "-A", "services.trainer.worker", "worker", "--pool=solo",
                          "--concurrency=1", "-Q", self.queue, "--loglevel=INFO"]  # fmt: skip
        return cmds


class Stack:
    """The running children."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = config.data_dir / "stack"
        self.messages: list[str] = []

    def start(self) -> None:
        """Start backing stores, then every child; raise if one does not become healthy."""
        cfg = self.config
        ensure_postgres(cfg.database_url, self.messages)
        ensure_redis(cfg.redis_url, self.messages)
        self.logs.mkdir(parents=True, exist_ok=True)
        env = self.config.env()
        root = Path(__file__).resolve().parents[2]
        for name, cmd in cfg.commands().items():
            busy = name in cfg.ports and port_open(cfg.host, cfg.ports[name])
            if busy:
                self.stop()
                raise UnavailableError(f"port {cfg.ports[name]} for {name} is already in use")
            log = (self.logs / f"{name}.log").open("ab")
            self.procs[name] = subprocess.Popen(cmd, cwd=root, env=cfg.child_env(name, env), stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)  # fmt: skip
            log.close()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.tail(name)
                raise UnavailableError(f"{name} exited with code {proc.returncode}; last log lines:\n{tail}")

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def wait_healthy(self) -> None:
        """Poll each service's /health and the worker's log until all are ready."""
        deadline = time.monotonic() + self.config.health_timeout_s
        http = [*SERVICES, *self.config.generator_names()[1:], *(["dashboard"] if "dashboard" in self.config.ports else [])]
        pending = set(http) | {"worker"}
        clients = {n: SyncClient(self.config.url(n), timeout=5.0) for n in http}
        try:
            while pending:
                self._check_alive()
                for name in sorted(pending):
                    if name == "worker":
                        if " ready." in self.tail("worker", 200):
                            pending.discard(name)
                        continue
                    try:
                        clients[name].health()
                        pending.discard(name)
                    except Exception:  # not up yet: keep polling until the deadline
                        continue
                if time.monotonic() > deadline:
                    raise UnavailableError(f"not healthy after {self.config.health_timeout_s:.0f}s: {sorted(pending)}")
                time.sleep(0.3)
        finally:
            for c in clients.values():
                c.close()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every child (reverse start order), then SIGKILL what is left after the grace period."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def watch(self) -> str:
        """Block until a child dies or a signal arrives; returns why."""
        reason: list[str] = []

        def on_signal(signum: int, _frame: object) -> None:
            reason.append(signal.Signals(signum).name)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not reason:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        reason.append(f"{name} exited with code {proc.returncode}")
                        break
                time.sleep(0.3)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return reason[0]
