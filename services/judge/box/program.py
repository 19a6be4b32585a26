# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox, between checker.py and harness.py in one module: plain, standard library only)
"""Sandbox side, program processes: their set-up and the bodies that run untrusted code.

Every program process is forked by the container's *zygote* (see harness.py), a process that never held
a request, so a program's memory holds the interpreter, the preloaded modules and what its own job file
says: the program and the arguments of its cases, never expected values or test source.

- :func:`child_setup`: descriptors (the job file is read and closed first), rlimits (address space, file
  size = output limit, CPU, processes, open files, no core), the container's uid, the seccomp filter
  (seccomp.py), cwd ``/work``; runs before any untrusted code.
- :func:`run_call`: ``call`` tests: the program is loaded once and the cases run in-process under
  per-case timers; each return value goes back on the result pipe (fd 3) as tagged JSON (:func:`encode`).
  The harness times every case on its own clock, and the service compares; the pipe carries nothing a
  program could not also produce by returning a value.
- :func:`run_script_child`: ``stdio`` cases and ``run_in_sandbox`` scripts, executed as ``__main__``.
- :func:`serve_program` (checker.py): ``check`` tests.
"""

import builtins
import fcntl
import gc
import json
import os
import resource
import signal
import sys
import traceback

JOB_FD = 4


def child_setup(cfg, limits, fds, uid=None, seccomp=None):
    """In a forked program process: descriptors, job, rlimits, identity, seccomp. Before untrusted code.

    ``fds`` = [stdin, stdout, stderr, result channel, job file]; afterwards only 0-3 are open and the
    job (a dict) is returned.
    """
    os.setsid()
    gc.enable()  # the harness runs without the cyclic collector; programs get the normal one
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    job = None
    if len(high) > JOB_FD:
        with os.fdopen(JOB_FD, "rb") as f:
            job = json.loads(f.read().decode("utf-8"))
    keep = min(len(high), JOB_FD)
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
    if seccomp is not None:
        seccomp.install()
    os.chdir(PATHS["work"])
    os.umask(0o022)
    return job


class CaseTimeout(BaseException):
    """Raised in a runner by the per-case interval timer or the CPU-limit signal."""


class NotPlain(Exception):
    """A candidate returned an object that is not a built-in value."""


def make_runner_tools():
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
        line = (_dumps(obj) + "\n").encode("utf-8", "surrogatepass")
        while line:
            n = _write(3, line)
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

    return emit, plain


def _enc_float(x):
    if x != x:
        return {"f": "nan"}
    if x in (float("inf"), float("-inf")):
        return {"f": "inf" if x > 0 else "-inf"}
    return x


_BIG = 1 << 4096


def encode(x, depth=0):
    """Tagged JSON of a plain value; the service's ``decode_value`` is its exact inverse.

    Every JSON object on the wire is a tag with one key, so no value a program returns (a dict that
    looks like an encoding, say) can decode to anything but itself.
    """
    t = type(x)
    if depth > 200:
        raise NotPlain("value nested too deeply")
    if t is int and (x >= _BIG or x <= -_BIG):
        return {"x": hex(x)}  # decimal text of a huge int is quadratic to parse: hex is linear
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return _enc_float(x)
    if t is list:
        return [encode(e, depth + 1) for e in x]
    if t is tuple:
        return {"t": [encode(e, depth + 1) for e in x]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is set:
        return {"s": [encode(e, depth + 1) for e in x]}
    if t is frozenset:
        return {"fs": [encode(e, depth + 1) for e in x]}
    if t is bytes:
        return {"b": x.decode("latin-1")}
    if t is complex:
        return {"c": [_enc_float(x.real), _enc_float(x.imag)]}
    raise NotPlain("unsupported type")


def classify_exception(e):
    """(status, detail) for an exception raised by untrusted code in a case."""
    if isinstance(e, CaseTimeout):
        return "timeout", "time limit exceeded"
    if isinstance(e, MemoryError):
        return "memory_exceeded", "MemoryError"
    if isinstance(e, OSError) and getattr(e, "errno", None) == 27:  # EFBIG: RLIMIT_FSIZE
        return "output_exceeded", "output limit exceeded"
    if isinstance(e, AssertionError):
        try:
            return "wrong_answer", "assertion failed" + (": " + str(e)[:200] if str(e) else "")
        except BaseException:
            return "wrong_answer", "assertion failed"
    if isinstance(e, NotPlain):
        return "wrong_answer", str(e)[:300]
    if isinstance(e, SystemExit):
        return "runtime_error", "exited (SystemExit %r) during the case" % (e.code,)
    try:
        return "runtime_error", ("%s: %s" % (type(e).__name__, e))[:500]
    except BaseException:
        return "runtime_error", "an exception that cannot be printed"


def run_call(job):
    """Runner body for ``call`` tests: load the program once, run cases ``job['start']..`` in-process.

    Emits ``{"loaded": true}`` after the program loaded, then one line per case: ``{"i", "status":
    "value", "value": <tagged JSON>}`` or a failure status. The expected values never enter the
    sandbox; the harness times each case from the previous line.
    """
    emit, plain = make_runner_tools()
    _classify, _resolve, _exec, _compile, _encode, _dumps = (
        classify_exception, resolve_callable, exec, compile, encode, json.dumps
    )
    _write_line = write_line
    _isinstance, _range, _len = isinstance, range, len
    _SystemExit, _SyntaxError, _BaseException = SystemExit, SyntaxError, BaseException
    _ftruncate, _lseek = os.ftruncate, os.lseek
    limits = job["limits"]
    time_s = float(limits["time_s"])
    cpu_s = float(limits["cpu_s"])
    value_cap = int(job["value_cap"])
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

    cases = job["cases"]
    start = int(job["start"])
    n = _len(cases)
    sys.modules["__main__"] = type(sys)("__main__")
    prog_ns = {"__name__": "__btp_solution__", "__builtins__": builtins}
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
        emit({"loaded": False, "status": status, "detail": detail[:500]})
        return
    try:
        fn = _resolve(prog_ns, job["fn_name"])
    except _BaseException as e:
        emit({"loaded": False, "status": "runtime_error", "detail": ("entry point not found: %s" % (e,))[:500]})
        return
    emit({"loaded": True})
    for i in _range(start, n):
        try:  # the output limit is per case
            _ftruncate(1, 0)
            _lseek(1, 0, 0)
        except OSError:
            pass
        try:
            case = cases[i]
            arm()
            value = plain(fn(*case.get("args", []), **case.get("kwargs", {})))
            disarm()
            text = _dumps(_encode(value))
            if _len(text) > value_cap:
                msg = {"i": i, "status": "output_exceeded", "detail": "returned value over %d bytes" % value_cap}
            else:
                msg = '{"i": %d, "status": "value", "value": %s}' % (i, text)
        except _BaseException as e:
            disarm()
            status, detail = _classify(e)
            msg = {"i": i, "status": status, "detail": detail}
        try:
            if type(msg) is str:
                _write_line(msg)
            else:
                emit(msg)
        except _BaseException as e:
            emit({"i": i, "status": "runtime_error", "detail": "result not serialisable: %r" % (e,)})


def write_line(text):
    data = (text + "\n").encode("utf-8", "surrogatepass")
    while data:
        n = os.write(3, data)
        data = data[n:]


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


def run_script_child(job):
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
        compiled = compile(job["program"], "main.py", "exec")
    except BaseException as e:  # SyntaxError, or a program too deep/large to compile
        _report_flag("syntax", ("%s: %s" % (type(e).__name__, e))[:500])
        os._exit(1)
    try:
        exec(compiled, ns)
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


def _report_flag(flag, detail=""):
    try:
        os.write(3, (json.dumps({"flag": flag, "detail": detail}) + "\n").encode())
    except BaseException:
        pass
