# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox under whatever python3 it has: plain, unannotated, standard library only)
"""The in-container harness ("zygote"): the trusted process of each bubblewrap container.

(Over 500 lines on purpose: it is shipped into the container as one script, standard library only, and
every part of it (framing, runner supervision, limits, the wipe between programs) guards the others' state.)

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
        self.zygote, self.zygote_pid, self.seccomp_ok = start_zygote(cfg)
        self.budget_end = 0.0
        self.reply_left = 0
        self.child = None  # the zygote's last child, until its exit is reported
        self.exited = {}

    def kill_all(self, spare_checker=True):
        """SIGKILL every process of the container except init, us, the zygote (and the checker); reap
        what is ours. Returns True when nothing is left: no live process, and no zombie but the zygote's
        last child (the zygote reaps it and reports; :meth:`poll_exit` waits for that)."""
        spare = {1, self.me, self.zygote_pid}
        if spare_checker and self.ck is not None:
            spare.add(self.ck["pid"])
        for _ in range(2000):
            self.reap()
            found = [p for p in self.pids() if p not in spare]
            live = [p for p in found if not is_zombie(p)]
            if not live:
                if all(p == self.child for p in found):
                    return True
                time.sleep(0.0005)  # zombies re-parented to us a moment ago: reap them next round
                continue
            for p in live:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.001)
        return False

    def pids(self):
        """Processes of the container, zombies included."""
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
        """Empty the writable directories as isolate does; False (the container is then replaced) when
        anything could not be removed or something a wipe cannot remove is left: a System V IPC object,
        a unix socket with a name (kept alive by descriptors in flight), a pseudo-terminal."""
        try:
            ok = self._wipe()
        except Exception:  # e.g. RecursionError on a very deep tree: replace the container
            return False
        try:
            with open("/proc/net/unix") as f:
                for line in f.read().splitlines()[1:]:
                    if len(line.split()) > 7:  # a path or an abstract name
                        ok = False
        except OSError:
            pass
        if self.cfg.get("pidns"):
            try:
                if [n for n in os.listdir("/dev/pts") if n != "ptmx"]:
                    ok = False
            except OSError:
                pass
            for name in ("shm", "sem", "msg"):
                try:
                    with open("/proc/sysvipc/" + name) as f:
                        if len(f.read().strip().splitlines()) > 1:
                            ok = False
                except OSError:
                    pass
        return ok

    def _wipe(self):
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
        os.chmod(PATHS["work"], 0o755)  # the program owns /work and may have changed its mode
        return ok

    def collect(self, pid, fd, deadline_fn, on_msg, line_cap):
        """Read result lines until the runner exits or a deadline passes.

        Returns ``(wait_status, maxrss_kb, killed, overflow)``; at a deadline, or when a line grows past
        ``line_cap`` bytes (``overflow``), every process but ours is killed. The lines are untrusted:
        ``on_msg`` gets what parses as a JSON object and checks it.
        """
        buf = b""
        eof = False
        overflow = False

        def feed(chunk):
            nonlocal buf, overflow
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if len(line) > line_cap:
                    overflow = True
                    return
                try:
                    msg = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError, MemoryError):
                    continue
                if isinstance(msg, dict):
                    on_msg(msg)
            if len(buf) > line_cap:
                overflow = True

        zfd = self.zygote.fileno()
        while True:
            remaining = deadline_fn() - time.monotonic()
            if remaining <= 0 or overflow:
                self.kill_all()
                status, rss = self.wait_status(pid)
                return status, rss, not overflow, overflow
            watch = [zfd] if eof else [fd, zfd]
            ready, _, _ = select.select(watch, [], [], min(remaining, 0.5))
            if fd in ready and not eof:
                chunk = os.read(fd, 1 << 20)
                if chunk:
                    feed(chunk)
                    continue
                eof = True
            if zfd in ready or pid in self.exited:
                got = self.poll_exit(pid)
                if got is not None:
                    # drain what is already in the pipe (a daemon may hold it open: do not wait for EOF)
                    while not eof and not overflow and select.select([fd], [], [], 0)[0]:
                        chunk = os.read(fd, 1 << 20)
                        if not chunk:
                            break
                        feed(chunk)
                    return got[0], got[1], False, overflow

    def poll_exit(self, pid, timeout=0.0):
        """(wait status, maxrss KiB) of the zygote's child ``pid`` once the zygote reports its exit."""
        deadline = time.monotonic() + timeout
        while pid not in self.exited:
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.zygote], [], [], remaining)
            if not ready:
                return None
            data = self.zygote.recv(4096)
            if not data:
                return None
            msg = json.loads(data.decode("utf-8"))
            if "exit" in msg:
                self.exited[int(msg["exit"])] = (msg["status"], int(msg["maxrss"]))
        return self.exited[pid]

    def wait_status(self, pid):
        got = self.poll_exit(pid, 10.0)
        return (None, 0) if got is None else got

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

    def budget_spent(self):
        return time.monotonic() >= self.budget_end

    def take_reply(self, nbytes):
        """Count ``nbytes`` of output against the program's reply budget; False when it is spent."""
        if self.reply_left < nbytes:
            self.reply_left = 0
            return False
        self.reply_left -= nbytes
        return True

    def judge_call(self, job):
        """``call`` tests: a runner loads the program once; the harness times every case itself."""
        limits = job["limits"]
        n = len(job["cases"])
        results = [None] * n
        time_s = float(limits["time_s"])
        value_cap = int(limits["output_kb"]) * 1024
        start = 0
        devnull = os.open("/dev/null", os.O_RDWR)
        try:
            while start < n and not self.budget_spent():
                t_spawn = time.monotonic()
                state = {"next": start, "loaded": False, "mark": t_spawn, "load_fail": None}

                def deadline(state=state):
                    return min(state["mark"] + time_s + GRACE_S, self.budget_end)

                def on_msg(msg, state=state):
                    now = time.monotonic()
                    if not state["loaded"]:
                        if msg.get("loaded") is True and now - state["mark"] > time_s:
                            # loading has time_s of its own: over it, every case left is a timeout
                            state["load_fail"] = {"status": "timeout", "detail": "time limit exceeded while loading"}
                            state["mark"] = -1e9  # the deadline is now: collect() stops the runner
                        elif msg.get("loaded") is True:
                            state["loaded"] = True
                            state["mark"] = now
                        elif msg.get("loaded") is False:
                            state["load_fail"] = msg
                        return
                    i = msg.get("i")
                    if type(i) is not int or i != state["next"] or i >= n:
                        return
                    elapsed = now - state["mark"]
                    results[i] = case_result(i, msg, elapsed, time_s, "value")
                    if results[i]["status"] == "value" and not self.take_reply(len(json.dumps(results[i]["value"]))):
                        results[i] = {"i": i, "status": "output_exceeded", "detail": "the program's values exceed the reply limit", "t": elapsed * 1000.0}
                    state["next"] = i + 1
                    state["mark"] = now

                r, w = os.pipe()
                out = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                child_job = {
                    "program": job["program"], "fn_name": job["fn_name"], "cases": job["cases"], "start": start,
                    "limits": limits, "value_cap": value_cap,
                }
                try:
                    pid = self.spawn("call", limits, [devnull, out, out, w], child_job)
                finally:
                    os.close(w)
                    os.close(out)
                status, rss, killed, overflow = self.collect(pid, r, deadline, on_msg, value_cap + 4096)
                os.close(r)
                self.kill_all()
                nxt = state["next"]
                fail = state["load_fail"]
                if fail is not None and not state["loaded"]:
                    st = fail.get("status") if fail.get("status") in CASE_STATUSES else "runtime_error"
                    detail = fail.get("detail") if type(fail.get("detail")) is str else ""
                    for i in range(nxt, n):
                        results[i] = {"i": i, "status": st, "detail": detail[:500], "t": 0.0}
                    break
                if nxt < n and results[nxt] is None:
                    if overflow:
                        st, detail = "output_exceeded", "returned value over %d bytes" % value_cap
                    elif not state["loaded"] and killed:
                        st, detail = "timeout", "time limit exceeded while loading"
                    else:
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
        limit = int(limits["output_kb"]) * 1024
        cases = []
        child_job = {"program": job["program"]}
        for idx, text in enumerate(inputs):
            if self.budget_spent():
                break
            in_path = PATHS["private"] + "/in"
            with open(in_path, "wb") as f:
                f.write(text.encode("utf-8"))
            in_fd = os.open(in_path, os.O_RDONLY)
            out_fd = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err_fd = os.open(PATHS["private"] + "/err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            r, w = os.pipe()
            flags = {}

            def on_flag(m, flags=flags):
                if type(m.get("flag")) is str and m["flag"] not in flags:
                    flags[m["flag"]] = str(m.get("detail", ""))[:500]

            t0 = time.monotonic()
            try:
                pid = self.spawn("script", limits, [in_fd, out_fd, err_fd, w], child_job)
            finally:
                for fd in (in_fd, out_fd, err_fd, w):
                    os.close(fd)
            status, rss, killed, _ = self.collect(
                pid, r, lambda t0=t0: min(t0 + time_s + GRACE_S, self.budget_end), on_flag, 65536
            )
            wall_ms = (time.monotonic() - t0) * 1000.0
            os.close(r)
            self.kill_all()
            out_size = os.path.getsize(PATHS["private"] + "/out") + os.path.getsize(PATHS["private"] + "/err")
            keep = min(limit, self.reply_left)
            stdout = read_capped(PATHS["private"] + "/out", keep)
            stderr = read_capped(PATHS["private"] + "/err", min(keep, 4096))
            self.take_reply(len(stdout) + len(stderr))
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
            out_exc = "output" in flags or out_size > keep or (
                status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ
            )
            cpu = status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU
            case = {
                "i": idx,
                "exit_code": exit_code,
                "stdout": stdout,
                "stderr": stderr,
                # over the limit is a timeout, whatever the program printed before
                "timed_out": killed or cpu or wall_ms > time_s * 1000.0,
                "memory_exceeded": bool(mem),
                "output_exceeded": bool(out_exc),
                "t": wall_ms,
            }
            if "syntax" in flags and exit_code == 1:
                case["syntax_error"] = flags["syntax"] or "SyntaxError"
            cases.append(case)
            if "syntax_error" in case:  # compiling is deterministic: every case would say the same
                for j in range(idx + 1, len(inputs)):
                    cases.append(dict(case, i=j, t=0.0, stdout="", stderr=""))
                break
        return {"cases": cases}

    def spawn(self, role, limits, fds, child_job):
        """Have the zygote fork a program process (``role``: call | script | program); returns its pid.

        The child reads ``child_job`` from a memfd passed with its descriptors. It is the zygote's child:
        the zygote waits for it and reports its wait status and peak memory (:meth:`poll_exit`); what it
        leaves behind (daemons) is re-parented to us, a subreaper, and killed by :meth:`kill_all`.
        """
        self.spawn_send(role, limits, fds, child_job)
        return self.spawn_wait()

    def spawn_send(self, role, limits, fds, child_job):
        """First half of :meth:`spawn`: the request (the caller may do other work before the pid)."""
        import socket

        if self.child is not None and self.child not in self.exited:
            self.kill_all()
            self.poll_exit(self.child, 10.0)
        self.exited.clear()
        self.child = None
        data = json.dumps(child_job).encode("utf-8")
        jfd = os.memfd_create("job", 0)
        try:
            view = memoryview(data)
            while view:
                k = os.write(jfd, view)
                view = view[k:]
            os.lseek(jfd, 0, 0)
            req = json.dumps({"role": role, "limits": limits}).encode("utf-8")
            socket.send_fds(self.zygote, [req], [*fds, jfd])
        finally:
            os.close(jfd)

    def spawn_wait(self):
        """Second half of :meth:`spawn`: the child's pid."""
        ready, _, _ = select.select([self.zygote], [], [], 30)
        if not ready:
            raise RuntimeError("zygote did not answer")
        reply = json.loads(self.zygote.recv(4096).decode("utf-8"))
        if "pid" not in reply:
            raise RuntimeError("zygote: %s" % reply.get("error"))
        self.child = int(reply["pid"])
        return self.child

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
                    reply = {"pong": True, "uid": os.getuid(), "pid": os.getpid(), "seccomp": self.seccomp_ok}
                else:
                    limits = req["limits"]
                    self.budget_end = time.monotonic() + float(limits["budget_s"])
                    self.reply_left = int(limits["reply_kb"]) * 1024
                    judge = {"check": self.judge_check, "call": self.judge_call}.get(req["kind"], self.judge_script)
                    reply = judge(req)
                    fill_budget(req, reply)
            except BaseException as e:
                reply = {"error": "harness: %s" % traceback.format_exception_only(type(e), e)[-1].strip()}
            clean = self.kill_all()
            if self.child is not None and self.poll_exit(self.child, 5.0) is None:
                clean = False  # the zygote did not reap its last child: replace the container
            reply["dirty"] = not (self.wipe() and clean and self.zygote_alive())
            write_frame(CTL_OUT, reply)

    def zygote_alive(self):
        try:
            return os.waitpid(self.zygote_pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False


CASE_STATUSES = ("wrong_answer", "runtime_error", "timeout", "memory_exceeded", "output_exceeded", "syntax_error")
BUDGET_DETAIL = "not run: the program's time budget was spent"


def case_result(i, msg, elapsed, time_s, ok_status):
    """A runner's line for case ``i``, checked field by field; times are ours, not the runner's."""
    t = elapsed * 1000.0
    if elapsed > time_s:
        return {"i": i, "status": "timeout", "detail": "time limit exceeded", "t": t}
    status = msg.get("status")
    detail = msg.get("detail") if type(msg.get("detail")) is str else ""
    if status == ok_status and ok_status == "value" and "value" in msg:
        return {"i": i, "status": "value", "value": msg["value"], "t": t}
    if status not in CASE_STATUSES:
        status, detail = "runtime_error", "malformed result from the runner"
    return {"i": i, "status": status, "detail": detail[:500], "t": t}


def fill_budget(req, reply):
    """Cases left undecided because the program's time budget ran out are timeouts."""
    cases = reply.get("cases")
    if cases is None:
        return
    if req["kind"] in ("stdio", "script"):
        for j in range(len(cases), len(req["cases"])):
            cases.append({"i": j, "exit_code": None, "stdout": "", "stderr": "", "timed_out": True,
                          "memory_exceeded": False, "output_exceeded": False, "t": 0.0, "budget": True})
        return
    for j, c in enumerate(cases):
        if c is None:
            cases[j] = {"i": j, "status": "timeout", "detail": BUDGET_DETAIL, "t": 0.0}


def is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return True  # gone
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] in (b"Z", b"X")


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
    try:  # a subreaper: program processes (forked through the zygote) and orphaned daemons are ours
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    except Exception:
        pass


# ---------------------------------------------------------------- zygote


def start_zygote(cfg):
    """Fork the zygote before any request arrives; returns (socket, pid, seccomp available)."""
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gc.collect()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        try:
            a.close()
            zygote_main(cfg, b)
        except BaseException:
            pass
        os._exit(0)
    b.close()
    ready, _, _ = select.select([a], [], [], 30)
    hello = json.loads(a.recv(4096).decode("utf-8")) if ready else {}
    return a, pid, bool(hello.get("seccomp"))


def zygote_main(cfg, sock):
    """The zygote: forks every program process from a state that never held a request.

    It is forked from the harness before the first request, holds only its socket (no control channel,
    no job, no test), is not dumpable and dies with the harness. Per request it receives the limits
    and the child's descriptors (stdin, stdout, stderr, result channel, job memfd), forks the program
    process, answers its pid, waits for it and reports its wait status and peak memory. One child at a
    time: the harness consumes that report before it asks for the next.
    """
    import socket

    keep = {sock.fileno(), 0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    _no_dump()
    try:
        _PRCTL[0](1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: gone with the harness
    except Exception:
        pass
    try:
        seccomp = SeccompInstaller()
    except Exception as e:
        seccomp = None
        error = repr(e)
    else:
        error = seccomp.error
    sock.send(json.dumps({"seccomp": error is None, "error": error}).encode("utf-8"))
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 8)
        if not msg:
            os._exit(0)
        child = None
        try:
            req = json.loads(msg.decode("utf-8"))
            child = os.fork()
            if child == 0:
                run_role(cfg, req, fds, seccomp)
            reply = {"pid": child}
        except Exception as e:
            reply = {"error": repr(e)[:300]}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        sock.send(json.dumps(reply).encode("utf-8"))
        if child:
            _, status, ru = os.wait4(child, 0)
            sock.send(json.dumps({"exit": child, "status": status, "maxrss": ru.ru_maxrss}).encode("utf-8"))


def run_role(cfg, req, fds, seccomp):
    """In a fresh program process: set up, then run the body of its role. Never returns."""
    try:
        job = child_setup(cfg, req["limits"], fds, seccomp=seccomp)
        role = req["role"]
        if role == "call":
            run_call(job)
        elif role == "script":
            run_script_child(job)
        else:
            serve_program(job, 3, 3)
    except BaseException:
        os._exit(120)
    os._exit(0)


def main():
    cfg = json.loads(sys.argv[1])
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # runners print and encode big ints (hex on the wire: see encode)
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
    if cfg.get("site"):  # a named environment: its packages, imported once here for every program
        import site

        for d in cfg["site"]:
            site.addsitedir(d)
    for name in (*PRELOAD, *cfg.get("preload", ())):
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
