"""Sandbox containers: bubblewrap command line, warm container pool, ``run_in_sandbox``.

(Just over 500 lines: the command line, the pool and the one-program call share the isolation model
below; splitting them would spread one security argument over three files.)

Isolation model (what each container is):

- ``bwrap`` with new mount, pid, network, ipc and uts namespaces (and cgroup where possible): no network
  interface but loopback-less ``lo``; only the directories in ``ro_binds`` (``/usr`` and the ``/lib*``,
  ``/bin`` links) are visible, read-only; ``/proc`` of the new pid namespace, a minimal ``/dev``; fresh
  size-limited tmpfs at ``/work`` (the program's cwd), ``/tmp`` and ``/dev/shm``; the environment is
  cleared. No file of the service (``/work/main``, ``/etc``, ``/root``, ...) exists inside.
- Privileged mode (the service runs as root, as in the Docker image): no user namespace; the harness keeps
  only CAP_SETUID/SETGID/KILL/DAC_OVERRIDE/FOWNER/CHOWN and every program runs as its container's own uid
  (``uid_base + i``) with no capabilities, so it can neither signal the harness nor touch its files, and
  RLIMIT_NPROC bounds its processes; the container's checker (``check`` tests) runs as yet another uid
  (``uid_base + i + 1_000_000``). Give each judge instance on one host its own ``uid_base``. Unprivileged mode (non-root service): a user namespace, programs run
  as the harness's uid; a program that kills the harness only fails itself (the container is replaced).
- Per program the harness forks runners with rlimits (address space, CPU, file size = output limit,
  processes, 64 open files, no core) and kills every process of the container afterwards.
- Warm pool: ``workers`` containers stay up; between two programs the harness wipes the box the way
  isolate does (no process left, ``/work``, ``/tmp``, ``/dev/shm`` emptied) and the container is replaced
  whenever that fails (``dirty``), when a System V IPC object survives, or when the harness dies.

``run_in_sandbox`` runs one script with the same isolation and returns a :class:`RunResult`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import select
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cgroups import ContainerCgroup, join_command, remove_stale
from .settings import Settings

log = logging.getLogger(__name__)

# One script from the files of box/ (all the code that runs inside a container): checker.py first (it
# installs the harness's private builtins), harness.py last (it ends by calling main()).
BOX_FILES = ("checker.py", "seccomp.py", "program.py", "harness.py")
HARNESS_SOURCE = "\n".join((Path(__file__).parent / "box" / name).read_text() for name in BOX_FILES)
CHECKER_UID_OFFSET = 1_000_000
_CGROUP_SEQ = itertools.count()
_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_CHOWN")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing, cannot create namespaces, or a container cannot be (re)started."""


class BoxDied(RuntimeError):
    """The container stopped answering (its harness was killed, or a reply deadline passed)."""


@dataclass
class RunResult:
    """Outcome of :func:`run_in_sandbox`."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    memory_exceeded: bool
    output_exceeded: bool
    wall_ms: float


def resolve_python(settings: Settings) -> str:
    """The interpreter used inside the sandbox."""
    if settings.python:
        return settings.python
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand):
            return cand
    raise SandboxUnavailable("no python3 under /usr for the sandbox; set BTP_JUDGE_PYTHON")


def privileged_mode() -> bool:
    """Root on the host: containers without a user namespace, programs under per-box uids."""
    return os.geteuid() == 0


@dataclass(frozen=True)
class Environment:
    """A named interpreter environment (a virtualenv of the sandbox's interpreter) programs may use."""

    name: str
    path: str
    site_dirs: tuple[str, ...]
    preload: tuple[str, ...]


def load_environment(name: str, path: str, settings: Settings) -> Environment:
    """Check a configured environment: a virtualenv made from the sandbox's own interpreter."""
    root = Path(path).resolve()
    cfg = root / "pyvenv.cfg"
    if not cfg.is_file():
        raise SandboxUnavailable(
            f"judge environment {name!r}: {root} is not a virtualenv (no pyvenv.cfg); create it with "
            f"`bash deploy/judge-env.sh {name} numpy sympy` or set BTP_JUDGE_ENVIRONMENTS"
        )
    python = resolve_python(settings)
    want = subprocess.run(
        [python, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    sites = tuple(str(d) for d in sorted(root.glob(f"lib/python{want}/site-packages")))
    if not sites:
        raise SandboxUnavailable(
            f"judge environment {name!r}: {root} has no lib/python{want}/site-packages; it must be a virtualenv "
            f"of the sandbox's interpreter {python} (Python {want})"
        )
    return Environment(name=name, path=str(root), site_dirs=sites, preload=tuple(settings.environment_preload))


ENV_MOUNT = "/env"  # where a container sees its environment (bwrap would make host parents 0700 dirs)


def bwrap_command(
    settings: Settings, *, privileged: bool, extra_ro: tuple[tuple[str, str], ...] = ()
) -> list[str]:
    """The bubblewrap command line up to (not including) the command to run."""
    bwrap = shutil.which(settings.bwrap_path) or settings.bwrap_path
    cmd = [
        bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
    ]
    if not privileged:
        cmd += ["--unshare-user", "--disable-userns"]
    for path in settings.ro_binds:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for src, dest in extra_ro:
        cmd += ["--ro-bind", src, dest]
    tmp = str(settings.tmpfs_mb * 1024 * 1024)
    cmd += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", tmp, "--tmpfs", "/tmp",
        "--size", tmp, "--tmpfs", "/work",
        "--size", str(settings.shm_mb * 1024 * 1024), "--tmpfs", "/dev/shm",
        "--size", str(4 * settings.max_output_kb * 1024 + 64 * 1024 * 1024), "--tmpfs", "/run/judge",
        "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/work",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
        # one malloc arena: per-thread 64 MiB arenas would eat the address-space limit of threaded programs
        "--setenv", "MALLOC_ARENA_MAX", "1",
        # numerical libraries start one thread per core by default: one, within the processes limit
        "--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1",
        "--chdir", "/",
    ]
    if privileged:
        cmd += ["--cap-drop", "ALL"]
        for cap in _CAPS:
            cmd += ["--cap-add", cap]
    return cmd


def probe_sandbox(settings: Settings) -> bool:
    """Check that bubblewrap can build a container here; returns the privileged flag to use.

    Raises :class:`SandboxUnavailable` with a message saying what to do otherwise.
    """
    bwrap = shutil.which(settings.bwrap_path)
    if bwrap is None:
        raise SandboxUnavailable(
            f"bubblewrap ({settings.bwrap_path!r}) is not installed: install the Debian package `bubblewrap`, "
            "or set BTP_JUDGE_BACKEND=process to run programs WITHOUT isolation (never for untrusted code)"
        )
    python = resolve_python(settings)
    errors = []
    for privileged in ([True, False] if privileged_mode() else [False]):
        cmd = [*bwrap_command(settings, privileged=privileged), python, "-S", "-c", "print('ok')"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(str(e))
            continue
        if r.returncode == 0 and r.stdout.strip() == "ok":
            return privileged
        errors.append(f"{'privileged' if privileged else 'user-namespace'} mode: {r.stderr.strip()[:300]}")
    raise SandboxUnavailable(
        "bubblewrap cannot create its namespaces on this host (" + "; ".join(errors) + "). In Docker the "
        "judge container needs cap_add SYS_ADMIN and security_opt seccomp=unconfined, apparmor=unconfined, "
        "systempaths=unconfined; or set BTP_JUDGE_BACKEND=process to run WITHOUT isolation"
    )


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj).encode("utf-8")
    return struct.pack(">I", len(data)) + data


class Box:
    """One warm container: a harness process talking frames over its stdin/stdout.

    Containers are spawned by one long-lived thread (``spawner``): bwrap's ``--die-with-parent`` is a
    parent-*thread* death signal, so a container started from a short-lived worker thread would be killed
    when that thread exits.
    """

    def __init__(
        self,
        index: int,
        settings: Settings,
        *,
        privileged: bool,
        spawner: ThreadPoolExecutor | None = None,
        environment: Environment | None = None,
        uid_offset: int = 0,
    ) -> None:
        self.spawner = spawner
        self.index = index
        self.environment = environment
        self.uid_offset = uid_offset
        self.settings = settings
        self.privileged = privileged
        self.proc: subprocess.Popen[bytes] | None = None
        self._scratch: str | None = None
        self.cgroup: ContainerCgroup | None = None
        self.programs = 0

    def _command(self) -> list[str]:
        python = resolve_python(self.settings)
        if self.settings.backend == "process":
            self._scratch = tempfile.mkdtemp(prefix=f"btp-judge-box{self.index}-")
            work = os.path.join(self._scratch, "work")
            cfg: dict[str, Any] = {
                "pidns": False, "drop_uid": False,
                "paths": {"work": work, "private": os.path.join(self._scratch, "private")}, "wipe": [work],
            }
            cfg.update(self._environment_cfg())
            return [python, "-s", "-S", "-B", "-c", HARNESS_SOURCE, json.dumps(cfg)]
        uid = self.settings.uid_base + self.uid_offset + self.index
        # the checker runs as a uid of its own, so programs can neither signal nor inspect it
        cfg = {"pidns": True, "drop_uid": self.privileged, "uid": uid, "checker_uid": uid + CHECKER_UID_OFFSET}
        cfg.update(self._environment_cfg(ENV_MOUNT))
        extra = ((self.environment.path, ENV_MOUNT),) if self.environment else ()
        # PYTHONPATH too: a program's own child interpreters (subprocess, multiprocessing) see the packages
        setenv = ["--setenv", "PYTHONPATH", ":".join(cfg["site"])] if self.environment else []
        return [
            *bwrap_command(self.settings, privileged=self.privileged, extra_ro=extra), *setenv,
            python, "-s", "-S", "-B", "-c", HARNESS_SOURCE, json.dumps(cfg),
        ]

    def _environment_cfg(self, mount: str | None = None) -> dict[str, Any]:
        env = self.environment
        if env is None:
            return {}
        sites = [mount + d[len(env.path):] if mount else d for d in env.site_dirs]
        return {"site": sites, "preload": list(env.preload)}

    def start(self) -> None:
        """Start the container (in its own cgroup where possible) and wait for its harness to answer."""
        cmd = self._command()
        if self.settings.cgroups and self.settings.backend == "bwrap":
            s = self.settings
            memory = (s.max_memory_mb + 2 * s.tmpfs_mb + s.shm_mb + 256) * 1024 * 1024
            self.cgroup = ContainerCgroup(
                f"btp-judge-{os.getpid()}-{next(_CGROUP_SEQ)}", memory_bytes=memory, pids=s.max_processes + 64
            )
            cmd = join_command(self.cgroup.create(), cmd)

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
                env={
                    "PATH": "/usr/local/bin:/usr/bin:/bin", "MALLOC_ARENA_MAX": "1", "PYTHONHASHSEED": "0",
                    **({"PYTHONPATH": ":".join(self.environment.site_dirs)} if self.environment else {}),
                },
            )

        self.proc = self.spawner.submit(spawn).result() if self.spawner else spawn()
        try:
            reply = self.request({"op": "ping"}, timeout=30)
        except BoxDied as e:
            self.close()
            raise SandboxUnavailable(f"sandbox container {self.index} did not start: {e}") from e
        if not reply.get("pong"):
            self.close()
            raise SandboxUnavailable(f"sandbox container {self.index} answered {reply!r}")
        if self.settings.backend == "bwrap" and not reply.get("seccomp"):
            self.close()
            raise SandboxUnavailable(
                f"sandbox container {self.index} cannot install its seccomp filter (kernel without seccomp, or "
                "an unsupported machine): programs could create namespaces and keyrings; refusing to start"
            )

    def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one frame and wait for the reply; :class:`BoxDied` if none comes in time."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise BoxDied("container not running")
        try:
            proc.stdin.write(_frame(obj))
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise BoxDied(f"harness gone: {e}") from e
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        head = self._read(fd, 4, deadline)
        (n,) = struct.unpack(">I", head)
        body = self._read(fd, n, deadline)
        reply: dict[str, Any] = json.loads(body)
        return reply

    @staticmethod
    def _read(fd: int, n: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        while n > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoxDied("no reply before the deadline")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            b = os.read(fd, min(n, 1 << 20))
            if not b:
                raise BoxDied("harness exited")
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def close(self) -> None:
        """Kill the container (its whole pid namespace dies with it)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def restart(self) -> None:
        """Replace the container with a fresh one."""
        self.close()
        self.start()

    @property
    def pid(self) -> int | None:
        """Host pid of the container's outer process (bwrap or the harness)."""
        return self.proc.pid if self.proc else None


class SandboxPool:
    """A fixed set of warm containers; ``run`` takes a free one (waiting if needed) for one program."""

    def __init__(
        self,
        settings: Settings,
        size: int | None = None,
        *,
        environment: Environment | None = None,
        uid_offset: int = 0,
    ) -> None:
        self.settings = settings
        self.size = size or settings.workers
        self.environment = environment
        self.uid_offset = uid_offset
        self.privileged = False
        self.boxes: list[Box] = []
        self._free: queue.Queue[Box] = queue.Queue()
        self._lock = threading.Lock()
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="btp-judge-spawner")
        self.restarts = 0

    def start(self) -> None:
        """Probe the sandbox, then start every container (raises :class:`SandboxUnavailable`)."""
        if self.settings.backend == "bwrap":
            self.privileged = probe_sandbox(self.settings)
            if self.settings.cgroups:
                remove_stale()
        else:
            resolve_python(self.settings)
        boxes = [
            Box(i, self.settings, privileged=self.privileged, spawner=self._spawner, environment=self.environment,
                uid_offset=self.uid_offset)
            for i in range(self.size)
        ]
        errors: list[BaseException] = []

        def start_one(b: Box) -> None:
            try:
                b.start()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start_one, args=(b,)) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for b in boxes:
                b.close()
            raise SandboxUnavailable(str(errors[0]))
        self.boxes = boxes
        for b in boxes:
            self._free.put(b)

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one job in a free container. A dead container is replaced and the job gets ``box_died``."""
        box = self._free.get()
        try:
            if box.proc is None:  # a restart failed earlier: try again now
                self._replace(box)
            if box.cgroup is not None and not box.cgroup.set_memory(self.job_memory_bytes(job)):
                self._replace(box)  # usage above the program's limit: a fresh container, then the limit
                if box.cgroup is not None and not box.cgroup.set_memory(self.job_memory_bytes(job)):
                    return {"box_died": "cannot set the container's memory limit"}
            try:
                reply = box.request(job, timeout)
            except BoxDied as e:
                reply = {"box_died": str(e)}
                self._replace(box)
                return reply
            box.programs += 1
            if reply.get("dirty"):
                self._replace(box)
            return reply
        finally:
            self._free.put(box)

    def job_memory_bytes(self, job: dict[str, Any]) -> int:
        """The container's memory limit while it runs ``job``: the program's whole process tree and its
        tmpfs files share ``memory_mb``, plus the fixed cost of the container's own processes."""
        s = self.settings
        return (int(job["limits"]["memory_mb"]) + s.box_overhead_mb) * 1024 * 1024

    def _replace(self, box: Box) -> None:
        with self._lock:
            self.restarts += 1
        try:
            box.restart()
        except SandboxUnavailable:
            log.exception("sandbox container %d could not be restarted", box.index)
            box.close()

    def cgroups_active(self) -> bool:
        """Whether the containers run in cgroups of their own."""
        return bool(self.boxes) and all(b.cgroup is not None and b.cgroup.dirs for b in self.boxes)

    def healthy(self) -> bool:
        """All containers running."""
        return bool(self.boxes) and all(b.proc is not None and b.proc.poll() is None for b in self.boxes)

    def close(self) -> None:
        """Stop every container."""
        for b in self.boxes:
            b.close()
        self.boxes = []
        self._spawner.shutdown(wait=False)


def script_limits(time_s: float, memory_mb: int, output_kb: int, processes: int) -> dict[str, Any]:
    """The harness's limit dict for one script run."""
    return {
        "time_s": time_s, "cpu_s": time_s, "cpu_total_s": time_s + 1, "memory_mb": memory_mb,
        "output_kb": output_kb, "processes": processes, "budget_s": time_s + 1, "reply_kb": output_kb + 64,
    }


def run_in_sandbox(
    code: str,
    *,
    stdin: str = "",
    time_s: float = 10.0,
    memory_mb: int = 1024,
    output_kb: int = 16384,
    settings: Settings | None = None,
    pool: SandboxPool | None = None,
) -> RunResult:
    """Run a Python script in the same isolation as judged programs (a warm ``pool`` if given, else a
    fresh one-container pool) and return its exit code, output and limit flags."""
    settings = settings or Settings()
    own = pool is None
    if pool is None:
        pool = SandboxPool(settings, size=1)
        pool.start()
    try:
        job = {
            "kind": "script", "program": code, "cases": [stdin],
            "limits": script_limits(time_s, memory_mb, output_kb, settings.processes),
        }
        reply = pool.run(job, timeout=time_s + 30)
    finally:
        if own:
            pool.close()
    if "box_died" in reply or "error" in reply:
        return RunResult(None, "", str(reply.get("box_died") or reply.get("error")), False, False, False, 0.0)
    c = reply["cases"][0]
    return RunResult(
        exit_code=c["exit_code"], stdout=c["stdout"], stderr=c["stderr"], timed_out=c["timed_out"],
        memory_exceeded=c["memory_exceeded"], output_exceeded=c["output_exceeded"], wall_ms=c["t"],
    )
