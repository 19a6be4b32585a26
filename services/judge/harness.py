# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox under whatever python3 it has: plain, unannotated, standard library only)
"""The in-container harness ("zygote"): runs inside each bubblewrap sandbox, standard library only.

This file is executed by the sandbox's own interpreter (``python3 -I -S -c <this source>``); it is never
imported by the service except to read its source. It is the trusted side of the sandbox: it never
executes the untrusted program in its own process.

Protocol: the service writes frames (4-byte big-endian length + JSON) on the harness's fd 0 and reads one
reply frame per request on fd 1. One request is one program (``kind`` = ``call`` | ``check`` | ``stdio`` |
``script``). For each program the harness:

1. creates a per-program secret and forks a child ("runner") that drops to the box's own uid (when the
   container runs privileged), sets rlimits (address space, CPU, file size = output limit, processes,
   open files, no core), closes every descriptor but 0/1/2 and the result pipe, and chdirs to ``/work``;
2. ``call``/``check``: the runner executes the program once and then runs the cases in-process, each under
   its own interval timer and CPU limit, and writes one result line per case (prefixed with the secret) on
   the result pipe. The harness watches a per-case deadline; a runner that hangs, dies or exits before
   reporting a case is killed, that case gets its verdict (timeout, memory_exceeded, output_exceeded,
   runtime_error), and a fresh runner continues with the next case;
   ``stdio``/``script``: one forked runner per case executes the program as ``__main__`` with the case's
   input on fd 0 and fd 1/2 on size-limited files;
3. kills every process left in the container (``kill(-1, SIGKILL)`` inside the pid namespace), empties
   ``/work``, ``/tmp`` and ``/dev/shm`` and reports ``dirty`` if anything (a process, a System V IPC
   object) could not be removed, in which case the service throws the container away.
"""

import builtins
import fcntl
import gc
import json
import os
import resource
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


# ---------------------------------------------------------------- runner (child) set-up


def child_setup(cfg, limits, stdin_fd, out_fd, err_fd, result_fd, extra_fd=None, uid=None):
    """In the forked child: descriptors, rlimits, identity. Runs before any untrusted code.

    Afterwards only fds 0, 1, 2, the result pipe (3) and ``extra_fd`` (moved to 4) are open.
    """
    os.setsid()
    gc.enable()  # the harness runs without the cyclic collector; programs get the normal one
    wanted = [stdin_fd, out_fd, err_fd, result_fd, extra_fd]
    while wanted and wanted[-1] is None:
        wanted.pop()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in wanted]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    keep = len(high)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= keep:
            try:
                os.close(fd)
            except OSError:
                pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if limits is None:  # the long-lived checker
        inf = resource.RLIM_INFINITY
        rl = ((resource.RLIMIT_AS, 4 << 30), (resource.RLIMIT_FSIZE, 1 << 20), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CPU, inf), (resource.RLIMIT_NPROC, 64))
    else:
        rl = (
            (resource.RLIMIT_AS, int(limits["memory_mb"]) * 1024 * 1024),
            (resource.RLIMIT_FSIZE, int(limits["output_kb"]) * 1024 + 1),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 64),
            (resource.RLIMIT_CPU, int(limits["cpu_total_s"]) + 1),
            (resource.RLIMIT_NPROC, int(limits["processes"])),
        )
    for res, val in rl:
        resource.setrlimit(res, (val, val))
    if cfg.get("drop_uid"):
        uid = int(cfg["uid"]) if uid is None else uid
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.chdir(PATHS["work"])
    os.umask(0o022)


class CaseTimeout(BaseException):
    """Raised in the runner by the per-case interval timer or the CPU-limit signal."""


class NotPlain(Exception):
    """A candidate returned an object that is not a built-in value."""


def make_runner_tools(secret):
    """Closures over saved references, created before the untrusted program runs."""
    _write = os.write
    _dumps = json.dumps
    _type = type
    _issub = issubclass
    _int_add, _float_add, _str_add = int.__add__, float.__add__, str.__add__
    _dict_items, _list_iter, _tuple_iter = dict.items, list.__iter__, tuple.__iter__
    _complex_add, _bytes_add = complex.__add__, bytes.__add__
    none_t = _type(None)
    exact = (none_t, bool, int, float, str, bytes, complex)

    _getpid = os.getpid
    runner_pid = _getpid()

    def emit(obj):
        if _getpid() != runner_pid:  # a process the program forked does not speak for the runner
            return
        line = (secret + "\t" + _dumps(obj) + "\n").encode("utf-8")
        while line:
            n = _write(RESULT_FD, line)
            line = line[n:]

    def plain(x, depth=0):
        """Copy of ``x`` made of built-in types only (subclasses are converted at C level)."""
        if depth > 200:
            raise NotPlain("value nested too deeply")
        t = _type(x)
        if t in exact:
            return x
        if t is list or _issub(t, list):
            return [plain(e, depth + 1) for e in _list_iter(x)]
        if t is tuple or _issub(t, tuple):
            return tuple(plain(e, depth + 1) for e in _tuple_iter(x))
        if t is dict or _issub(t, dict):
            return {plain(k, depth + 1): plain(v, depth + 1) for k, v in _dict_items(x)}
        if _issub(t, frozenset):
            return frozenset(plain(e, depth + 1) for e in frozenset.__iter__(x))
        if _issub(t, set):
            return {plain(e, depth + 1) for e in set.__iter__(x)}
        if _issub(t, bool):
            return bool(_int_add(x, 0))
        if _issub(t, int):
            return _int_add(x, 0)
        if _issub(t, float):
            return _float_add(x, 0.0)
        if _issub(t, str):
            return _str_add(x, "")
        if _issub(t, bytes):
            return _bytes_add(x, b"")
        if _issub(t, complex):
            return _complex_add(x, 0j)
        raise NotPlain("returned a %s, not a built-in value" % getattr(t, "__name__", "?"))

    def to_json(x, depth=0):
        """JSON form of a plain value: tuples and sets become lists, non-str dict keys become str."""
        t = _type(x)
        if t is float and x != x:
            return {"__float__": "nan"}
        if t is float and x in (float("inf"), float("-inf")):
            return {"__float__": "inf" if x > 0 else "-inf"}
        if t in (none_t, bool, int, float, str):
            return x
        if t in (list, tuple):
            return [to_json(e, depth + 1) for e in x]
        if t in (set, frozenset):
            items = [to_json(e, depth + 1) for e in x]
            try:
                items.sort(key=_dumps)
            except Exception:
                pass
            return items
        if t is dict:
            return {(k if _type(k) is str else _dumps(to_json(k))): to_json(v, depth + 1) for k, v in x.items()}
        if t is bytes:
            return x.decode("latin-1")
        if t is complex:
            return [x.real, x.imag]
        raise NotPlain("unsupported type")

    return emit, plain, to_json


def classify_exception(e):
    """(status, detail) for an exception raised by untrusted code in a case."""
    if isinstance(e, CaseTimeout):
        return "timeout", "time limit exceeded"
    if isinstance(e, MemoryError):
        return "memory_exceeded", "MemoryError"
    if isinstance(e, OSError) and getattr(e, "errno", None) == 27:  # EFBIG: RLIMIT_FSIZE
        return "output_exceeded", "output limit exceeded"
    if isinstance(e, AssertionError):
        return "wrong_answer", "assertion failed" + (": " + str(e)[:200] if str(e) else "")
    if isinstance(e, NotPlain):
        return "wrong_answer", str(e)[:300]
    if isinstance(e, SystemExit):
        return "runtime_error", "exited (SystemExit %r) during the case" % (e.code,)
    return "runtime_error", ("%s: %s" % (type(e).__name__, e))[:500]


def run_inprocess(job, start, pristine_builtins, secret):
    """Runner body for ``call`` (and ``check`` with ``checker=inprocess``): load the program once, run
    cases ``start..`` in-process.

    ``call``: the runner only reports return values (as JSON); the service compares them with the
    expected values, which never enter the sandbox. ``check`` in-process (the fast mode) is hardened
    against programs that attack the checker from inside this process: every helper is bound
    to a local before the program runs; ``__main__`` (this harness) is replaced in ``sys.modules`` by an
    empty module; the harness's objects were frozen out of the garbage collector's view before the fork
    (``gc.get_objects`` does not list them); the check's code objects are compiled before the program
    runs and, for every case, a fresh namespace (pristine builtins, prelude re-executed) and fresh function
    objects are built from them, so patching ``check``, a case function or ``builtins`` earlier has no
    effect; the candidate's return values are converted to plain built-in values before any assert sees
    them. What remains possible is deliberate frame introspection from inside a candidate call.
    """
    emit, plain, to_json = make_runner_tools(secret)
    _classify, _resolve, _exec, _compile = classify_exception, resolve_callable, exec, compile
    _isinstance, _dict, _list, _range, _float, _len = isinstance, dict, list, range, float, len
    _function = type(run_inprocess)
    _SystemExit, _SyntaxError, _BaseException = SystemExit, SyntaxError, BaseException
    _ftruncate, _lseek = os.ftruncate, os.lseek
    limits = job["limits"]
    time_s = float(limits["time_s"])
    cpu_s = float(limits["cpu_s"])
    _perf = time.perf_counter
    _setitimer = signal.setitimer
    _getrusage = resource.getrusage
    _setrlimit = resource.setrlimit
    _RLIMIT_CPU, _ITIMER_REAL, _RUSAGE_SELF = resource.RLIMIT_CPU, signal.ITIMER_REAL, resource.RUSAGE_SELF
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    _CaseTimeout = CaseTimeout

    def on_alarm(signum, frame):
        raise _CaseTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGXCPU, on_alarm)

    def arm():
        ru = _getrusage(_RUSAGE_SELF)
        used = ru.ru_utime + ru.ru_stime
        soft = min(cpu_hard, int(used + cpu_s) + 1)
        _setrlimit(_RLIMIT_CPU, (soft, cpu_hard))
        _setitimer(_ITIMER_REAL, time_s)

    def disarm():
        _setitimer(_ITIMER_REAL, 0)

    kind = job["kind"]
    n = len(job["cases"])
    prelude_code = None
    case_codes = []
    if kind == "check":
        try:
            prelude_code = _compile(job["check_prelude"], "<check>", "exec")
            for i, src in enumerate(job["cases"]):
                module = _compile(src, "<check case %d>" % i, "exec")
                # the module's only constant code object is the case function's body
                case_codes.append(next(c for c in module.co_consts if type(c) is type(module)))
        except BaseException as e:  # the check itself is broken
            for i in range(start, n):
                emit({"i": i, "status": "runtime_error", "detail": "check failed to load: %r" % (e,), "t": 0})
            return
    pristine = _dict(pristine_builtins)
    sys.modules["__main__"] = type(sys)("__main__")
    prog_ns = {"__name__": "__btp_solution__", "__builtins__": builtins}
    t0 = _perf()
    try:
        arm()
        _exec(_compile(job["program"], "<program>", "exec"), prog_ns)
        disarm()
    except _BaseException as e:
        disarm()
        if _isinstance(e, _SystemExit):
            status, detail = "runtime_error", "program exited (SystemExit %r) while loading" % (e.code,)
        elif _isinstance(e, _SyntaxError):
            status, detail = "syntax_error", "%s: %s" % (type(e).__name__, e)
        else:
            status, detail = _classify(e)
            detail = "while loading: " + detail
        t = (_perf() - t0) * 1000.0
        for i in _range(start, n):
            emit({"i": i, "status": status, "detail": detail, "t": t if i == start else 0.0})
        return
    try:
        if kind == "check":
            fn = prog_ns[job["entry_point"]]
        else:
            fn = _resolve(prog_ns, job["fn_name"])
    except _BaseException as e:
        for i in _range(start, n):
            emit({"i": i, "status": "runtime_error", "detail": "entry point not found: %s" % (e,), "t": 0})
        return

    def candidate(*args, **kwargs):
        return plain(fn(*args, **kwargs))

    def fresh_case(i):
        ns = {"__name__": "__btp_check__", "__builtins__": _dict(pristine)}
        _exec(prelude_code, ns)
        # HumanEval's checks may call helpers of the program (poly, encode_cyclic): the checker sees the
        # program's globals wherever its own prelude defines nothing of that name
        for k in _list(prog_ns):
            if k not in ns:
                ns[k] = prog_ns[k]
        return _function(case_codes[i], ns)

    cases = job["cases"]
    for i in _range(start, n):
        try:  # the output limit is per case
            _ftruncate(1, 0)
            _lseek(1, 0, 0)
        except OSError:
            pass
        t0 = _perf()
        try:
            if kind == "check":
                case_fn = fresh_case(i)
                arm()
                case_fn(candidate)
                disarm()
                msg = {"i": i, "status": "passed", "detail": ""}
            else:
                case = cases[i]
                arm()
                value = candidate(*case.get("args", []), **case.get("kwargs", {}))
                disarm()
                msg = {"i": i, "status": "value", "value": to_json(value), "detail": ""}
        except _BaseException as e:
            disarm()
            status, detail = _classify(e)
            msg = {"i": i, "status": status, "detail": detail}
        msg["t"] = (_perf() - t0) * 1000.0
        try:
            emit(msg)
        except _BaseException as e:
            emit({"i": i, "status": "runtime_error", "detail": "result not serialisable: %r" % (e,), "t": 0})


def resolve_callable(ns, name):
    """``fn``, ``Class.method`` (on a fresh instance) or, as APPS does, ``Solution().fn``."""
    parts = name.split(".")
    if len(parts) == 2:
        owner = ns[parts[0]]
        if isinstance(owner, type):
            owner = owner()
        return getattr(owner, parts[1])
    if name in ns:
        return ns[name]
    if "Solution" in ns and isinstance(ns["Solution"], type):
        return getattr(ns["Solution"](), name)
    raise NameError("name %r is not defined" % name)


def run_script_child(job, stdin_text_path):
    """Runner body for ``stdio``/``script``: execute the program as ``__main__``."""
    import io

    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True
    )
    sys.argv = ["main.py"]
    code = 0
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "main.py", "exec"), ns)
    except SystemExit as e:
        c = e.code
        code = c if isinstance(c, int) else (0 if c is None else 1)
        if not isinstance(c, (int, type(None))):
            try:
                sys.stderr.write(str(c) + "\n")
            except BaseException:
                pass
    except MemoryError:
        code = 137
        _report_flag("memory")
    except OSError as e:
        if e.errno == 27:
            _report_flag("output")
            code = 153
        else:
            traceback.print_exc()
            code = 1
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        code = 1
    try:
        sys.stdout.flush()
    except OSError as e:
        if e.errno == 27:
            _report_flag("output")
            code = code or 153
    except BaseException:
        pass
    try:
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code & 0xFF)


_FLAG_SECRET = [""]


def _report_flag(flag):
    try:
        os.write(RESULT_FD, (_FLAG_SECRET[0] + "\t" + json.dumps({"flag": flag}) + "\n").encode())
    except BaseException:
        pass


# ---------------------------------------------------------------- harness side


class Harness:
    """The trusted loop: one request frame in, one reply frame out."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.pristine = dict(builtins.__dict__)
        self.me = os.getpid()
        self.ck = None  # the long-lived checker: {"pid", "sock", "buf", "jobs"}

    # ------------------------------------------------------------ the checker process

    def ensure_checker(self):
        if self.ck is not None:
            return
        import socket

        a, b = socket.socketpair()
        devnull = os.open("/dev/null", os.O_RDWR)
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            try:
                a.close()
                checker_uid = int(self.cfg.get("checker_uid", self.cfg.get("uid", 0)))
                child_setup(self.cfg, None, devnull, devnull, devnull, b.fileno(), uid=checker_uid)
                os.chdir("/")
                checker_server(RESULT_FD, self.pristine)
            except BaseException:
                os._exit(123)
            os._exit(0)
        b.close()
        os.close(devnull)
        self.ck = {"pid": pid, "sock": a, "buf": b"", "jobs": 0}

    def stop_checker(self):
        ck, self.ck = self.ck, None
        if ck is None:
            return
        try:
            os.kill(ck["pid"], signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(ck["pid"], 0)
        except ChildProcessError:
            pass
        ck["sock"].close()

    def checker_line(self, deadline):
        """Next JSON line from the checker, or None at EOF/deadline."""
        ck = self.ck
        while b"\n" not in ck["buf"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([ck["sock"]], [], [], remaining)
            if not ready:
                continue
            chunk = ck["sock"].recv(1 << 20)
            if not chunk:
                return None
            ck["buf"] += chunk
        line, ck["buf"] = ck["buf"].split(b"\n", 1)
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            return {"fatal": "unreadable checker line"}

    def wait_program(self, pid, limits):
        """Wait for a program process that closed its socket; kill it if it lingers."""
        deadline = time.monotonic() + GRACE_S
        while True:
            wpid, status, ru = os.wait4(pid, os.WNOHANG)
            if wpid:
                return status, ru.ru_maxrss, False
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                status, rss = self.wait_status(pid)
                return status, rss, False
            time.sleep(0.0002)

    def judge_check(self, job):
        """``check`` with the separate checker: a program process per attempt, the checker runs asserts."""
        import socket

        limits = job["limits"]
        n = len(job["cases"])
        results = [None] * n
        time_s = float(limits["time_s"])
        start = 0
        devnull = os.open("/dev/null", os.O_RDWR)
        try:
            while start < n:
                self.ensure_checker()
                a, b = socket.socketpair()
                out = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                gc.freeze()
                pid = os.fork()
                if pid == 0:
                    try:
                        a.close()
                        child_setup(self.cfg, limits, devnull, out, out, b.fileno())
                        serve_program(job, RESULT_FD, RESULT_FD)
                    except BaseException:
                        os._exit(122)
                    os._exit(0)
                b.close()
                os.close(out)
                body = json.dumps(dict(job, start=start)).encode("utf-8")
                try:
                    socket.send_fds(self.ck["sock"], [len(body).to_bytes(4, "big")], [a.fileno()])
                    self.ck["sock"].sendall(body)
                except OSError:
                    self.stop_checker()
                a.close()
                nxt, deadline = start, time.monotonic() + 2 * time_s + GRACE_S
                finished = False
                fatal = "checker gave no result"
                while self.ck is not None:
                    msg = self.checker_line(deadline)
                    if msg is None:
                        break
                    if msg.get("done"):
                        finished = "restart" if msg.get("restart") else "done"
                        break
                    if "fatal" in msg:
                        fatal = str(msg["fatal"])[:300]
                        continue
                    i = msg.get("i")
                    if not isinstance(i, int) or not (nxt <= i < n):
                        continue
                    if "died" in msg:
                        status, rss, _ = self.wait_program(pid, limits)
                        st, detail = self.death_verdict(status, rss, False, limits, str(msg["died"]))
                        msg = {"i": i, "status": st, "detail": detail, "t": msg.get("t", 0.0)}
                    results[i] = msg
                    nxt = i + 1
                    deadline = time.monotonic() + time_s + GRACE_S
                if not finished:
                    # the checker is stuck (a check that ignores its alarm) or gone: replace it
                    self.stop_checker()
                    if nxt < n and results[nxt] is None:
                        results[nxt] = {"i": nxt, "status": "timeout", "detail": "time limit exceeded", "t": time_s * 1000.0}
                        nxt += 1
                else:
                    self.ck["jobs"] += 1
                    if finished == "done" and nxt < n and results[nxt] is None:
                        # the checker stopped without deciding the next case: a fresh attempt decides it
                        results[nxt] = {"i": nxt, "status": "runtime_error", "detail": fatal, "t": 0.0}
                        nxt += 1
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                self.kill_all()
                start = nxt
        finally:
            os.close(devnull)
        if self.ck is not None and self.ck["jobs"] >= CHECKER_JOBS:
            self.stop_checker()
        return {"cases": results}

    def fork_runner(self, limits, stdin_fd, out_fd, err_fd, body):
        """Fork a runner with a fresh per-run secret for its result pipe."""
        r, w = os.pipe()
        secret = os.urandom(16).hex()
        gc.freeze()  # hide everything the harness holds from gc.get_objects() in the runner
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                child_setup(self.cfg, limits, stdin_fd, out_fd, err_fd, w)
                body(secret)
            except BaseException:
                os._exit(120)
            os._exit(0)
        os.close(w)
        return pid, r, secret

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
