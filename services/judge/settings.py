"""Judge settings: ``BTP_JUDGE_*`` environment variables (plus the shared ``BTP_*`` names)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(CommonSettings):
    """Sandbox backend, pool size, queue bound, default and maximum limits."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_JUDGE_", extra="ignore", populate_by_name=True, validate_default=True
    )

    backend: Literal["bwrap", "process"] = Field(
        default="bwrap",
        description="`bwrap`: each program in a bubblewrap container (required for untrusted code). "
        "`process`: NO isolation, plain child processes; only when the operator opts in (warned on every start).",
    )
    checker: Literal["process"] = Field(
        default="process",
        description="`check` tests run their asserts in a checker process separate from the program (the "
        "program can only return values; verdicts cannot be forged). The former `inprocess` mode ran them "
        "next to the candidate, where a program could read the test through the interpreter's frames; it "
        "is gone.",
    )
    bwrap_path: str = Field(default="bwrap", description="bubblewrap executable (name on PATH or absolute path).")
    python: str | None = Field(
        default=None,
        description="Interpreter that runs programs inside the sandbox; must live under a read-only bound "
        "directory (default: /usr/bin/python3, else /usr/local/bin/python3).",
    )
    ro_binds: list[str] = Field(
        default_factory=lambda: ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"],
        description="Host directories visible read-only in the sandbox (symlinks are recreated as symlinks).",
    )
    cgroups: bool = Field(
        default=True,
        description="Put each container in a cgroup of its own with memory and pids limits where the host "
        "allows it (cgroup v1, or v2 with delegation); rlimits apply either way.",
    )
    workers: int = Field(
        default_factory=_default_workers, ge=1, le=256,
        description="Warm sandbox containers, i.e. programs judged in parallel (default: CPU count).",
    )
    max_queue: int = Field(
        default=512, ge=1, description="Programs admitted (running + waiting) before requests get 429."
    )
    uid_base: int = Field(
        default=60000, ge=1000, description="Container i runs programs as uid/gid uid_base + i (privileged mode)."
    )
    tmpfs_mb: int = Field(default=64, ge=1, description="Size of each writable tmpfs (/work, /tmp), MiB.")
    shm_mb: int = Field(default=16, ge=1, description="Size of /dev/shm in the sandbox, MiB.")
    time_s: float = Field(default=2.0, gt=0, description="Default wall time per case, seconds.")
    cpu_s: float | None = Field(default=None, gt=0, description="Default CPU time per case (default: time_s).")
    memory_mb: int = Field(default=512, ge=16, description="Default address-space limit per process, MiB.")
    output_kb: int = Field(default=1024, ge=1, description="Default output limit per case (stdout+stderr), KiB.")
    processes: int = Field(default=16, ge=1, description="Default limit on processes+threads of a program.")
    program_time_s: float | None = Field(
        default=None, gt=0,
        description="Default wall-time budget of a whole program, all its cases together (default: "
        "2 x time_s, at least 5 s). Cases not started when it runs out are timeouts: a program that hangs "
        "on every case costs this, not cases x time_s.",
    )
    max_program_time_s: float = Field(default=600.0, gt=0, description="Largest program_time_s a request may ask for.")
    max_program_kb: int = Field(
        default=1024, ge=1, description="Largest program (UTF-8 bytes) a request may send; above is a 413."
    )
    max_test_kb: int = Field(
        default=1024, ge=1,
        description="Largest `check` test source, stdio input/output and call arguments/expected values of one "
        "item (UTF-8/JSON bytes); above is a 413. The check source is parsed in the service (AST split into "
        "cases), so it stays bounded.",
    )
    reply_kb: int = Field(
        default=8192, ge=64,
        description="What one program may send back in all (returned values, captured stdout), KiB; values "
        "past it are `output_exceeded`. Bounds the service's memory per program.",
    )
    environments: dict[str, str] = Field(
        default_factory=dict,
        description="Named interpreter environments programs may ask for (`environment` on a request or test "
        'spec), as JSON: {"scientific": "/path/to/venv"}. Each is a virtualenv of the sandbox\'s own '
        "interpreter (deploy/judge-env.sh makes one), mounted read-only into containers of its own, with "
        "the same isolation.",
    )
    environment_workers: int = Field(default=1, ge=1, le=64, description="Warm containers per environment.")
    environment_preload: list[str] = Field(
        default_factory=lambda: ["numpy", "sympy"],
        description="Modules imported once per container of an environment (those it lacks are skipped), so "
        "programs do not pay for the import.",
    )
    box_overhead_mb: int = Field(
        default=192, ge=32,
        description="Memory of a container's own processes (harness, zygote, checker), added to the program's "
        "memory_mb to make the container's cgroup limit while it runs that program.",
    )
    max_time_s: float = Field(default=30.0, gt=0, description="Largest time_s a request may ask for.")
    max_cpu_s: float = Field(default=30.0, gt=0, description="Largest cpu_s a request may ask for.")
    max_memory_mb: int = Field(default=4096, ge=16, description="Largest memory_mb a request may ask for.")
    max_output_kb: int = Field(default=65536, ge=1, description="Largest output_kb a request may ask for.")
    max_processes: int = Field(default=256, ge=1, description="Largest processes a request may ask for.")
