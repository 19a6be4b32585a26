# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox under whatever python3 it has: plain, unannotated, standard library only)
"""The in-container harness ("zygote"): the trusted process of each bubblewrap container.

The service runs ``checker.py + runner.py + harness.py`` as one script (``python3 -s -S -B -c``) inside the
container; it is never imported by the service except to read its source. The harness never executes
untrusted code (nor test code) in its own process.

Protocol: the service writes frames (4-byte big-endian length + JSON) on the harness's fd 0 and reads one
reply frame per request on fd 1. One request is one program (``kind`` = ``call`` | ``check`` | ``stdio`` |
``script``):

- ``call`` (and ``check`` with ``checker=inprocess``): a forked runner (see runner.py) loads the program
  once and runs the cases in-process, writing one secret-prefixed line per case on its result pipe; the
  harness watches a per-case deadline, and a runner that hangs, dies or exits before reporting a case is
  killed, that case gets its verdict (timeout, memory_exceeded, output_exceeded, runtime_error) and a
  fresh runner continues with the next case;
- ``check``: a program process per attempt and the container's long-lived checker (see checker.py);
- ``stdio``/``script``: one forked runner per case executes the program as ``__main__`` with the case's
  input on fd 0 and fds 1/2 on size-limited files.

After every program it kills every process left in the container but the checker, empties ``/work``,
``/tmp`` and ``/dev/shm`` and reports ``dirty`` when anything (a process, a System V IPC object) could not
be removed; the service then throws the container away. Runners are forked with the harness's objects
frozen out of the cyclic GC (fewer copy-on-write faults) and with commonly imported modules preloaded.
"""

import builtins
import gc
import json
import os
import select
import shutil
import signal
import struct
import sys
import time
import traceback

CTL_IN = 0
CTL_OUT = 1
RESULT_FD = 3
PATHS = {"work": "/work", "private": "/run/judge"}
WIPE_DIRS = ["/work", "/tmp", "/dev/shm"]
GRACE_S = 0.3
CHECKER_JOBS = 500  # programs one checker process serves before it is replaced
# imported once by the harness so that forked runners do not pay for them (``from typing import List``
# alone costs ~4 ms of CPU in every fresh process); runners get their own copy-on-write view
PRELOAD = (
    "typing", "math", "re", "collections", "itertools", "functools", "heapq", "string", "bisect", "hashlib",
    "random", "fractions", "decimal", "statistics", "operator", "copy", "datetime", "array", "io",
)


# ---------------------------------------------------------------- framing


def read_exact(fd, n):
    chunks = []
    while n > 0:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def read_frame(fd):
    head = read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = read_exact(fd, n)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def write_frame(fd, obj):
    data = json.dumps(obj).encode("utf-8")
    data = struct.pack(">I", len(data)) + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


# ---------------------------------------------------------------- harness side


class Harness(CheckerSupervision):
    """The trusted loop: one request frame in, one reply frame out."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.pristine = dict(builtins.__dict__)
        self.me = os.getpid()
        self.ck = None  # the long-lived checker: {"pid", "sock", "buf", "jobs"}

    def kill_all(self, spare_checker=True):
        """SIGKILL every process of the container except init, us (and the checker); reap our children."""
        spare = {1, self.me}
        if spare_checker and self.ck is not None:
            spare.add(self.ck["pid"])
        for _ in range(500):
            others = [p for p in self.pids() if p not in spare]
            if not others:
                return True
            if self.cfg.get("pidns") and len(spare) == 2:
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
            else:
                for p in others:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            self.reap()
            time.sleep(0.001)
        return False

    def pids(self):
        if self.cfg.get("pidns"):
            return [int(p) for p in os.listdir("/proc") if p.isdigit()]
        return [self.me, *self.descendants()]

    def descendants(self):
        """Without a pid namespace: our descendants (we are a subreaper, so orphans come back to us)."""
        out, frontier = [], [self.me]
        while frontier:
            nxt = []
            for p in frontier:
                try:
                    tasks = os.listdir("/proc/%d/task" % p)
                except OSError:
                    continue
                for t in tasks:
                    try:
                        with open("/proc/%d/task/%s/children" % (p, t)) as f:
                            nxt.extend(int(c) for c in f.read().split())
                    except OSError:
                        pass
            out.extend(nxt)
            frontier = nxt
        return out

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def wipe(self):
        ok = True
        for d in WIPE_DIRS:
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                path = os.path.join(d, name)
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                except OSError:
                    ok = False
        if self.cfg.get("drop_uid"):
            os.chown(PATHS["work"], int(self.cfg["uid"]), int(self.cfg["uid"]))
        for name in ("shm", "sem", "msg") if self.cfg.get("pidns") else ():
            try:
                with open("/proc/sysvipc/" + name) as f:
                    if len(f.read().strip().splitlines()) > 1:
                        ok = False
            except OSError:
                pass
        return ok

    def collect(self, pid, fd, secret, deadline_fn, on_msg):
        """Read secret-prefixed result lines until the runner exits or a deadline passes.

        Returns ``(wait_status, maxrss_kb, killed)``; at a deadline every process but us is killed.
        Lines without the secret (anything a program could print) are ignored.
        """
        buf = b""
        prefix = (secret + "\t").encode()
        eof = False

        def feed(chunk):
            nonlocal buf
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(prefix):
                    try:
                        on_msg(json.loads(line[len(prefix):].decode("utf-8")))
                    except ValueError:
                        pass

        while True:
            remaining = deadline_fn() - time.monotonic()
            if remaining <= 0:
                self.kill_all()
                status, rss = self.wait_status(pid)
                return status, rss, True
            if not eof:
                ready, _, _ = select.select([fd], [], [], min(remaining, 0.05))
                if ready:
                    chunk = os.read(fd, 1 << 20)
                    if chunk:
                        feed(chunk)
                        continue
                    eof = True
            else:
                time.sleep(0.0002)
            wpid, status, ru = os.wait4(pid, os.WNOHANG)
            if wpid:
                # drain what is already in the pipe (a daemon may hold it open: do not wait for EOF)
                while not eof and select.select([fd], [], [], 0)[0]:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    feed(chunk)
                return status, ru.ru_maxrss, False

    def wait_status(self, pid):
        try:
            _, status, ru = os.wait4(pid, 0)
        except ChildProcessError:
            return None, 0
        return status, ru.ru_maxrss

    def death_verdict(self, status, maxrss_kb, killed, limits, what):
        if killed:
            return "timeout", "time limit exceeded"
        if status is None:
            return "runtime_error", "runner vanished"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return "timeout", "CPU time limit exceeded"
            if sig == signal.SIGXFSZ:
                return "output_exceeded", "output limit exceeded"
            if sig == signal.SIGKILL and maxrss_kb * 1024 >= 0.85 * limits["memory_mb"] * 1024 * 1024:
                return "memory_exceeded", "killed near the memory limit"
            return "runtime_error", "killed by signal %d %s" % (sig, what)
        code = os.WEXITSTATUS(status)
        return "runtime_error", "exited with code %d %s" % (code, what)

    def judge_inprocess(self, job):
        limits = job["limits"]
        n = len(job["cases"])
        results = [None] * n
        time_s = float(limits["time_s"])
        start = 0
        devnull = os.open("/dev/null", os.O_RDWR)
        try:
            while start < n:
                state = {"next": start, "deadline": time.monotonic() + 2 * time_s + GRACE_S}

                def on_msg(msg, state=state):
                    i = msg.get("i")
                    if not isinstance(i, int) or not (state["next"] <= i < n) or results[i] is not None:
                        return
                    results[i] = msg
                    state["next"] = i + 1
                    state["deadline"] = time.monotonic() + time_s + GRACE_S

                def body(secret, start=start):
                    return run_inprocess(job, start, self.pristine, secret)

                out = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                pid, r, secret = self.fork_runner(limits, devnull, out, out, body)
                os.close(out)
                status, rss, killed = self.collect(pid, r, secret, lambda state=state: state["deadline"], on_msg)
                os.close(r)
                self.kill_all()
                nxt = state["next"]
                if nxt < n and results[nxt] is None:
                    st, detail = self.death_verdict(status, rss, killed, limits, "before the case finished")
                    results[nxt] = {"i": nxt, "status": st, "detail": detail, "t": time_s * 1000.0 if killed else 0.0}
                    nxt += 1
                start = nxt
        finally:
            os.close(devnull)
        return {"cases": results}

    def judge_script(self, job):
        limits = job["limits"]
        inputs = job["cases"]
        time_s = float(limits["time_s"])
        cases = []
        for idx, text in enumerate(inputs):
            in_path = PATHS["private"] + "/in"
            with open(in_path, "wb") as f:
                f.write(text.encode("utf-8"))
            in_fd = os.open(in_path, os.O_RDONLY)
            out_fd = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err_fd = os.open(PATHS["private"] + "/err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            flags = set()

            def body(secret):
                _FLAG_SECRET[0] = secret
                run_script_child(job, None)

            t0 = time.monotonic()
            pid, r, secret = self.fork_runner(limits, in_fd, out_fd, err_fd, body)
            for fd in (in_fd, out_fd, err_fd):
                os.close(fd)
            status, rss, killed = self.collect(
                pid, r, secret, lambda t0=t0: t0 + time_s + GRACE_S, lambda m, flags=flags: flags.add(m.get("flag"))
            )
            wall_ms = (time.monotonic() - t0) * 1000.0
            os.close(r)
            self.kill_all()
            limit = int(limits["output_kb"]) * 1024
            stdout = read_capped(PATHS["private"] + "/out", limit)
            stderr = read_capped(PATHS["private"] + "/err", min(limit, 65536))
            out_size = os.path.getsize(PATHS["private"] + "/out") + os.path.getsize(PATHS["private"] + "/err")
            exit_code = None
            if status is not None and os.WIFEXITED(status):
                exit_code = os.WEXITSTATUS(status)
            elif status is not None and os.WIFSIGNALED(status):
                exit_code = -os.WTERMSIG(status)
            mem = "memory" in flags or (
                status is not None
                and os.WIFSIGNALED(status)
                and os.WTERMSIG(status) == signal.SIGKILL
                and not killed
                and rss * 1024 >= 0.85 * limits["memory_mb"] * 1024 * 1024
            )
            out_exc = "output" in flags or out_size > limit or (
                status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ
            )
            cpu = status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU
            cases.append(
                {
                    "i": idx,
                    "exit_code": exit_code,
                    "stdout": stdout,
                    "stderr": stderr,
                    "timed_out": killed or cpu,
                    "memory_exceeded": bool(mem),
                    "output_exceeded": bool(out_exc),
                    "t": wall_ms,
                }
            )
        return {"cases": cases}

    def serve(self):
        while True:
            try:
                req = read_frame(CTL_IN)
            except (OSError, ValueError):
                return
            if req is None:
                return
            try:
                if req.get("op") == "ping":
                    reply = {"pong": True, "uid": os.getuid(), "pid": os.getpid()}
                elif req["kind"] == "check" and req.get("checker") != "inprocess":
                    reply = self.judge_check(req)
                elif req["kind"] in ("call", "check"):
                    reply = self.judge_inprocess(req)
                else:
                    reply = self.judge_script(req)
            except BaseException as e:
                reply = {"error": "harness: %s" % traceback.format_exception_only(type(e), e)[-1].strip()}
            clean = self.kill_all()
            reply["dirty"] = not (self.wipe() and clean)
            write_frame(CTL_OUT, reply)


def read_capped(path, limit):
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", errors="replace")


def setup_container(cfg):
    PATHS.update(cfg.get("paths", {}))
    WIPE_DIRS[:] = cfg.get("wipe", WIPE_DIRS)
    os.makedirs(PATHS["private"], mode=0o700, exist_ok=True)
    os.chmod(PATHS["private"], 0o700)
    for d in ("/tmp", "/dev/shm") if cfg.get("pidns") else ():
        if os.path.isdir(d):
            try:
                os.chmod(d, 0o1777)
            except OSError:
                pass
    os.makedirs(PATHS["work"], exist_ok=True)
    if cfg.get("drop_uid"):
        os.chown(PATHS["work"], int(cfg["uid"]), int(cfg["uid"]))
    if not cfg.get("pidns"):
        try:  # become a subreaper so that orphaned daemons come back to us and get killed
            import ctypes

            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
        except Exception:
            pass


def main():
    cfg = json.loads(sys.argv[1])
    # move the control channel off fds 0/1 so runners never inherit it by accident
    global CTL_IN, CTL_OUT
    CTL_IN = os.dup(0)
    CTL_OUT = os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    setup_container(cfg)
    try:
        import ctypes

        _PRCTL[0] = ctypes.CDLL(None).prctl
    except Exception:
        pass
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass
    harness = Harness(cfg)
    # The harness itself creates no reference cycles worth collecting: no cyclic GC here, and everything
    # it holds is frozen before each fork, so runners never traverse (and copy) the harness's pages.
    gc.collect()
    gc.freeze()
    gc.disable()
    harness.serve()


if __name__ == "__main__":
    main()
