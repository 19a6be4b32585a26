"""Best-effort cgroup limits for sandbox containers (memory and pids), where the host allows them.

rlimits bound each process; a cgroup bounds the whole container (a program's processes together, its
tmpfs files included). The judge creates one cgroup per container under its own cgroup: cgroup v1
(``memory.limit_in_bytes``, ``pids.max``) or v2 (``memory.max``, ``pids.max``, when the controllers can
be enabled there). The container's first process joins it before ``exec``-ing bubblewrap, so everything
in the container inherits it. When nothing can be created (no cgroupfs, read-only, v2 with processes in
our own cgroup), containers run with rlimits only and ``/health`` says ``"cgroups": false``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")


def _own_cgroups() -> dict[str, Path]:
    """Directory of this process's cgroup for the memory and pids controllers (v1), or ``v2``."""
    out: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "" and (ROOT / "cgroup.controllers").exists():
            out["v2"] = ROOT / path.lstrip("/")
            continue
        for ctrl in controllers.split(","):
            if ctrl in ("memory", "pids"):
                out[ctrl] = ROOT / ctrl / path.lstrip("/")
    return out


class ContainerCgroup:
    """The cgroup(s) of one container: create, limit, the files to join, remove."""

    def __init__(self, name: str, memory_bytes: int, pids: int) -> None:
        self.name = name
        self.memory_bytes = memory_bytes
        self.pids = pids
        self.dirs: list[Path] = []

    def create(self) -> list[str]:
        """Create and limit; returns the ``cgroup.procs`` files the container must join (may be empty)."""
        own = _own_cgroups()
        made: list[Path] = []
        try:
            if "memory" in own or "pids" in own:
                for ctrl, limit_file, value in (
                    ("memory", "memory.limit_in_bytes", self.memory_bytes),
                    ("pids", "pids.max", self.pids),
                ):
                    if ctrl not in own:
                        continue
                    d = own[ctrl] / self.name
                    d.mkdir(exist_ok=True)
                    made.append(d)
                    (d / limit_file).write_text(str(value))
            elif "v2" in own:
                base = own["v2"]
                (base / "cgroup.subtree_control").write_text("+memory +pids")
                d = base / self.name
                d.mkdir(exist_ok=True)
                made.append(d)
                (d / "memory.max").write_text(str(self.memory_bytes))
                (d / "pids.max").write_text(str(self.pids))
        except OSError as e:
            log.info("no cgroup limits for %s (%s); rlimits only", self.name, e)
            self.dirs = made
            self.remove()
            return []
        self.dirs = made
        return [str(d / "cgroup.procs") for d in made]

    def set_memory(self, memory_bytes: int) -> bool:
        """Change the memory limit (per program); False when the kernel refuses (usage above it)."""
        if memory_bytes == self.memory_bytes:
            return True
        for d in self.dirs:
            name = "memory.max" if (d / "memory.max").exists() else "memory.limit_in_bytes"
            if not (d / name).exists():
                continue
            try:
                (d / name).write_text(str(memory_bytes))
            except OSError as e:
                log.warning("cgroup %s: memory limit %d refused (%s)", d, memory_bytes, e)
                return False
        self.memory_bytes = memory_bytes
        return True

    def remove(self) -> None:
        """Remove the cgroup directories (their processes must be gone)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    with contextlib.suppress(Exception):
                        import time

                        time.sleep(0.01)
        self.dirs = []


def remove_stale() -> int:
    """Remove container cgroups left by judge processes that died without cleaning up (SIGKILL)."""
    removed = 0
    for base in set(_own_cgroups().values()):  # containers' cgroups are made right under ours
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for d in entries:
            parts = d.name.split("-")
            if not (d.is_dir() and d.name.startswith("btp-judge-") and len(parts) == 4 and parts[2].isdigit()):
                continue
            if Path(f"/proc/{parts[2]}").exists():
                continue
            with contextlib.suppress(OSError):
                os.rmdir(d)
                removed += 1
    return removed


def join_command(procs_files: list[str], cmd: list[str]) -> list[str]:
    """``cmd`` prefixed by a shell that moves itself into the cgroups, then execs ``cmd``."""
    if not procs_files:
        return cmd
    script = 'while [ "$1" != "--" ]; do echo $$ > "$1"; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *procs_files, "--", *cmd]
