# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox, between checker.py and harness.py in one module: plain, standard library only)
"""Sandbox side, runner processes: set-up of a forked runner and the bodies that run untrusted code.

- :func:`child_setup`: descriptors, rlimits (address space, file size = output limit, CPU, processes,
  open files, no core), the container's uid, cwd ``/work``; runs before any untrusted code.
- :func:`run_inprocess`: ``call`` tests (and ``check`` with ``checker=inprocess``): the program is loaded
  once and the cases run in-process under per-case interval timers; only values (``call``) or statuses
  (``check`` in-process) go back on the secret-prefixed result pipe.
- :func:`run_script_child`: ``stdio`` cases and ``run_in_sandbox`` scripts, executed as ``__main__``.
"""

import builtins
import fcntl
import gc
import json
import os
import resource
import signal
import sys
import time
import traceback


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
