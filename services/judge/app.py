"""Judge service (port 8002): unit tests of untrusted programs in bubblewrap sandbox containers.

``uvicorn services.judge.app:create_app --factory --port 8002``. The lifespan probes bubblewrap and
starts ``workers`` warm containers (see :mod:`.sandbox` for the isolation model and :mod:`.engine` for
verdicts). If bubblewrap is missing or cannot create namespaces the service refuses to start with one
line saying why (``create_app()`` without settings probes the sandbox before uvicorn starts, see
:mod:`services.common.startup`); ``BTP_JUDGE_BACKEND=process`` runs programs WITHOUT isolation and logs a warning on
every start.

Docker: bubblewrap needs to create mount/pid/net/ipc/uts namespaces and, running as root without a user
namespace, to mount tmpfs and drop to per-container uids. The judge container therefore needs exactly::

    cap_add: [SYS_ADMIN, NET_ADMIN]  # SYS_ADMIN: namespaces, tmpfs, pivot_root; NET_ADMIN: bwrap brings up
                                     # "lo" in each new network namespace
    # (SETUID, SETGID, KILL, CHOWN, DAC_OVERRIDE, FOWNER, which the harness keeps, are Docker defaults)
    security_opt:
      - seccomp=unconfined           # Docker's default seccomp profile blocks unshare/mount/pivot_root
      - apparmor=unconfined          # docker-default AppArmor denies mount
      - systempaths=unconfined       # Docker masks /proc paths, which blocks mounting a fresh /proc

(no ``privileged: true``, no host network, no extra devices). The image needs the ``bubblewrap`` package
and a ``python3`` under ``/usr``; the service runs as root inside its container (bwrap then needs no user
namespace, and programs run under per-container uids). Per-container cgroup limits additionally need a
writable cgroup hierarchy (``cgroup: private`` plus a writable ``/sys/fs/cgroup``, or cgroup v2
delegation); without it the judge keeps to rlimits and ``/health`` reports ``"cgroups": false``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from services.common.http import build_app
from services.common.startup import StartupError, process_settings

from .api import router
from .judging import Judge
from .sandbox import SandboxPool, SandboxUnavailable, load_environment
from .settings import Settings

ENV_UID_OFFSET = 400_000  # uids of environment pools: uid_base + ENV_UID_OFFSET + 256 * k + i

log = logging.getLogger(__name__)


def _health(request: Request) -> dict[str, Any]:
    judge: Judge | None = getattr(request.app.state, "judge", None)
    if judge is None:
        return {"sandbox": "down"}
    return {
        "backend": judge.settings.backend,
        "privileged": judge.pool.privileged,
        "cgroups": judge.pool.cgroups_active(),
        "workers": judge.pool.size,
        "healthy": judge.pool.healthy(),
        "queued": judge.queued,
        "programs_judged": judge.programs_judged,
        "container_restarts": judge.pool.restarts,
        "environments": {name: {"workers": p.size, "healthy": p.healthy()} for name, p in judge.environments.items()},
    }


def check_dependencies(settings: Settings) -> None:
    """One sandbox container starts here (bubblewrap present, namespaces allowed, seccomp filter installed;
    or, with the process backend, python3 present); :class:`~services.common.startup.StartupError`
    otherwise. It is closed again: the lifespan starts the pool."""
    pool = SandboxPool(settings, size=1)
    try:
        pool.start()
    except SandboxUnavailable as exc:
        if settings.backend != "bwrap":
            raise StartupError(str(exc), "BTP_JUDGE_PYTHON") from exc
        tried = shutil.which(settings.bwrap_path) or settings.bwrap_path
        message = str(exc) if repr(settings.bwrap_path) in str(exc) else f"{tried}: {exc}"
        raise StartupError(message, "BTP_JUDGE_BWRAP_PATH") from exc
    finally:
        pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the judge app; the sandbox pool starts in the lifespan. Without ``settings`` (a starting
    process) they come from the environment and a missing or unusable bubblewrap ends the process with one
    line."""
    settings = settings or process_settings(Settings, "judge", check_dependencies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.backend == "process":
            log.warning(
                "BTP_JUDGE_BACKEND=process: programs run WITHOUT any sandbox (no namespaces, host files and "
                "network visible). Never judge untrusted code this way."
            )
        pool = SandboxPool(settings)
        environments: dict[str, SandboxPool] = {}
        try:
            pool.start()
            for k, (name, path) in enumerate(sorted(settings.environments.items())):
                env = load_environment(name, path, settings)
                # uids of their own, far from the default pool's: programs of two pools never share a uid
                environments[name] = SandboxPool(
                    settings, settings.environment_workers, environment=env, uid_offset=ENV_UID_OFFSET + 256 * k
                )
                environments[name].start()
        except SandboxUnavailable as e:
            pool.close()
            for p in environments.values():
                p.close()
            log.error("judge cannot start: %s", e)
            raise RuntimeError(f"judge cannot start: {e}") from e
        judge = Judge(settings, pool, environments)
        app.state.judge = judge
        try:
            yield
        finally:
            app.state.judge = None
            judge.close()

    return build_app(
        service="judge",
        title="BTP judge",
        routers=[router],
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        health_details=_health,
    )
