# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox, prepended to harness.py: plain, unannotated, standard library only)
"""Sandbox side of ``check`` tests: the checker and the program live in two different processes.

For one attempt the harness forks a *checker* process, which first forks the *program* process and only
then receives the per-run secret and keeps the result pipe; the program process never has either. The
program process executes the untrusted program and serves calls: ``candidate(...)`` (and any other
top-level name of the program the check uses, such as HumanEval's ``poly``) are proxies in the checker
that send the arguments over a pipe and get back the return value (marshal frames, checked to be plain
built-in values only: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``). The asserts run in the checker on decoded values, so a
program can neither override ``__eq__``, nor patch builtins, the checker or the harness, nor forge a
result: it can only return values. Both processes run as the container's uid and are not dumpable, so
one cannot read the other's memory or descriptors through /proc.

Limits: arguments must be encodable (a lambda passed to the candidate is a runtime error), mutations the
candidate makes to its arguments are not seen by the check, and a program name the check uses is always
called, never read as a value.
"""

import builtins as _builtins
import json as _cjson
import marshal as _marshal
import os as _cos

# Every function of the harness (this file and harness.py, executed as one module) resolves builtins
# through this private copy, so a program that patches the ``builtins`` module in a runner cannot change
# what ``isinstance``, ``type`` or ``AssertionError`` mean to the harness code running next to it.
__builtins__ = dict(_builtins.__dict__)

_BUILTIN_EXC = {
    name: obj for name, obj in vars(__import__("builtins")).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}


class CandidateFailed(BaseException):
    """The program process failed in a way that decides the case (memory, output, exit, crash)."""

    def __init__(self, status, detail):
        BaseException.__init__(self, detail)
        self.status = status
        self.detail = detail


class CandidateError(Exception):
    """The candidate raised an exception that is not a built-in one."""


_PLAIN_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_PLAIN_CONTAINERS = (list, tuple, set, frozenset)


def plain_value(x, depth=0):
    """``x`` if it is made of built-in values only (exact types); raises NotPlain otherwise.

    The checker runs this on everything it unmarshals from the program process, so a code object or
    any other non-value type never reaches an assert.
    """
    t = type(x)
    if t in _PLAIN_ATOMS:
        return x
    if depth > 200:
        raise NotPlain("value nested too deeply")
    if t in _PLAIN_CONTAINERS:
        for e in x:
            plain_value(e, depth + 1)
        return x
    if t is dict:
        for k, v in x.items():
            plain_value(k, depth + 1)
            plain_value(v, depth + 1)
        return x
    raise NotPlain("returned a %s, not a built-in value" % getattr(t, "__name__", "?"))


def send_frame(fd, obj):
    """Length-prefixed marshal frame (marshal: C-level, cheap in a freshly forked process)."""
    data = _marshal.dumps(obj)
    data = len(data).to_bytes(4, "big") + data
    while data:
        n = _cos.write(fd, data)
        data = data[n:]


def recv_frame(fd, limit):
    """One frame, or None at EOF; frames above ``limit`` bytes are refused."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > limit:
        raise ValueError("frame too large")
    body = read_exact(fd, n)
    if body is None:
        return None
    return _marshal.loads(body)


def _no_dump():
    """Make this process non-dumpable: no other process of the same uid can open its /proc files."""
    try:
        _PRCTL[0](4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


_PRCTL = [None]


def serve_program(job, rfd, wfd):
    """Program process: load the program, then answer call requests until the checker goes away."""
    _no_dump()
    plain = make_runner_tools("")[1]
    prog_ns = {"__name__": "__btp_solution__", "__builtins__": __import__("builtins")}
    try:
        exec(compile(job["program"], "<program>", "exec"), prog_ns)
        load = ("ok",)
    except BaseException as e:
        if isinstance(e, SystemExit):
            load = ("st", "runtime_error", "program exited (SystemExit %r) while loading" % (e.code,))
        elif isinstance(e, SyntaxError):
            load = ("st", "syntax_error", "%s: %s" % (type(e).__name__, e))
        else:
            status, detail = classify_exception(e)
            load = ("st", status, "while loading: " + detail)
    send_frame(wfd, load)
    if load[0] != "ok":
        return
    entry = job["entry_point"]
    while True:
        req = recv_frame(rfd, 1 << 30)
        if req is None:
            return
        try:
            name, args, kwargs, new_case = req
            if new_case:
                try:  # the output limit is per case
                    _cos.ftruncate(1, 0)
                    _cos.lseek(1, 0, 0)
                except OSError:
                    pass
            name = entry if name is None else name
            if name not in prog_ns:
                raise NameError("name %r is not defined" % (name,))
            out = ("v", plain(prog_ns[name](*args, **kwargs)))
        except BaseException as e:
            if isinstance(e, NotPlain):
                out = ("st", "wrong_answer", str(e)[:300])
            elif isinstance(e, Exception) and not isinstance(e, (MemoryError, OSError)):
                out = ("exc", type(e).__name__, str(e)[:300])
            else:
                status, detail = classify_exception(e)
                out = ("st", status, detail)
        try:
            send_frame(wfd, out)
        except BaseException as e:
            status, detail = classify_exception(e)
            try:
                send_frame(wfd, ("st", status, "reply failed: " + detail))
            except BaseException:
                _cos._exit(121)


def check_job(job, start, psock, emit, pristine_builtins):
    """Run cases ``start..`` of one program against its program process (socket ``psock``).

    Returns ``"restart"`` after a case that left the program process dead or stuck: the harness then
    starts a fresh program process for the next case.
    """
    c2p_w = p2c_r = psock
    limits = job["limits"]
    time_s = float(limits["time_s"])
    n = len(job["cases"])
    frame_limit = int(limits["memory_mb"]) * 1024 * 1024
    state = {"new_case": False}

    def died(what):
        """The program process is gone: the harness (its parent) decides the case from its wait status."""
        return CandidateFailed("died", what)

    def receive(what):
        try:
            out = recv_frame(p2c_r, frame_limit)
        except (ValueError, EOFError, TypeError):
            raise CandidateFailed("runtime_error", "malformed reply from the program") from None
        if out is None:
            raise died(what)
        if type(out) is not tuple or not out or type(out[0]) is not str:
            raise CandidateFailed("runtime_error", "malformed reply from the program")
        return out

    def call(name, args, kwargs):
        try:
            plain_value(args)
            plain_value(kwargs)
        except NotPlain as e:
            raise TypeError("argument cannot be passed to the sandboxed program: %s" % e) from None
        try:
            send_frame(c2p_w, (name, args, kwargs, state["new_case"]))
        except OSError:
            raise died("before the call") from None
        state["new_case"] = False
        out = receive("during the call")
        if out[0] == "v" and len(out) == 2:
            try:
                return plain_value(out[1])
            except NotPlain as e:
                raise CandidateFailed("wrong_answer", str(e)) from None
        detail = str(out[2]) if len(out) > 2 else ""
        if out[0] == "exc" and len(out) == 3:
            cls = _BUILTIN_EXC.get(out[1]) if type(out[1]) is str else None
            if cls is not None:
                try:
                    err = cls(detail)
                except Exception:
                    err = None
                if err is not None:
                    raise err
            raise CandidateError("%s: %s" % (out[1], detail))
        status = out[1] if len(out) > 1 and out[1] in STATUSES else "runtime_error"
        raise CandidateFailed(status, detail)

    def proxy(name):
        def proxied(*args, **kwargs):
            return call(name, args, kwargs)

        proxied.__name__ = name or job["entry_point"]
        return proxied

    # loading the program counts against the first case's time
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, time_s)
    try:
        load = receive("while loading")
        signal.setitimer(signal.ITIMER_REAL, 0)
        if load[0] == "ok":
            status = None
        else:
            status = load[1] if len(load) > 2 and load[1] in STATUSES else "runtime_error"
            detail = str(load[2]) if len(load) > 2 else "program failed to load"
    except BaseException as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(e, CandidateFailed) and e.status == "died":
            emit({"i": start, "died": e.detail + " while loading", "t": (time.perf_counter() - t0) * 1000.0})
            return "restart"
        if isinstance(e, CandidateFailed):
            status, detail = e.status, e.detail
        else:
            status, detail = "timeout", "time limit exceeded while loading"
    if status is not None:
        t = (time.perf_counter() - t0) * 1000.0
        for i in range(start, n):
            emit({"i": i, "status": status, "detail": detail[:500], "t": t if i == start else 0.0})
        return
    prelude = compile(job["check_prelude"], "<check>", "exec")
    case_codes = []
    for i, src in enumerate(job["cases"]):
        module = compile(src, "<check case %d>" % i, "exec")
        case_codes.append(next(c for c in module.co_consts if type(c) is type(module)))
    fn_type = type(check_job)
    for i in range(start, n):
        t0 = time.perf_counter()
        stop = False
        try:
            ns = {"__name__": "__btp_check__", "__builtins__": dict(pristine_builtins)}
            exec(prelude, ns)
            for name in job.get("program_names", ()):
                if name not in ns:
                    ns[name] = proxy(name)
            case_fn = fn_type(case_codes[i], ns)
            state["new_case"] = True
            signal.setitimer(signal.ITIMER_REAL, time_s)
            case_fn(proxy(None))
            signal.setitimer(signal.ITIMER_REAL, 0)
            msg = {"i": i, "status": "passed", "detail": ""}
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(e, CandidateFailed) and e.status == "died":
                msg = {"i": i, "died": e.detail}
                stop = True
            elif isinstance(e, CandidateFailed):
                msg = {"i": i, "status": e.status if e.status in STATUSES else "runtime_error", "detail": e.detail[:500]}
                # the program process may be dead or stuck: a fresh pair continues with the next case
                stop = e.status != "wrong_answer"
            elif isinstance(e, CaseTimeout):
                msg = {"i": i, "status": "timeout", "detail": "time limit exceeded"}
                stop = True
            else:
                status, detail = classify_exception(e)
                msg = {"i": i, "status": status, "detail": detail}
        msg["t"] = (time.perf_counter() - t0) * 1000.0
        emit(msg)
        if stop:
            return "restart"
    return None


def checker_server(ctl_fd, pristine_builtins):
    """The long-lived checker of a container: one job (a program's check, from case ``start``) at a time.

    It runs as its own uid, distinct from the programs' uid (privileged mode), is not dumpable, and
    talks to the harness over ``ctl_fd`` (a Unix socket the programs never get): the harness sends a
    length-prefixed JSON job together with the socket of that program's process (SCM_RIGHTS); the
    checker answers with one JSON line per case and a final ``{"done": ...}``.
    """
    import socket as _socket

    _no_dump()
    sock = _socket.socket(fileno=ctl_fd)

    def on_alarm(signum, frame):
        raise CaseTimeout()

    signal.signal(signal.SIGALRM, on_alarm)

    def emit(obj):
        sock.sendall((_cjson.dumps(obj) + "\n").encode("utf-8"))

    while True:
        data, fds, _flags, _addr = _socket.recv_fds(sock, 4, 1)
        if not data:
            return
        while len(data) < 4:
            more = sock.recv(4 - len(data))
            if not more:
                return
            data += more
        size = int.from_bytes(data, "big")
        body = b""
        while len(body) < size:
            chunk = sock.recv(min(size - len(body), 1 << 20))
            if not chunk:
                return
            body += chunk
        job = _cjson.loads(body)
        outcome = None
        try:
            if not fds:
                raise RuntimeError("no program socket")
            outcome = check_job(job, job["start"], fds[0], emit, pristine_builtins)
        except BaseException as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            emit({"fatal": "checker: %s" % traceback.format_exception_only(type(e), e)[-1].strip()})
        finally:
            for fd in fds:
                try:
                    _cos.close(fd)
                except OSError:
                    pass
        emit({"done": True, "restart": outcome == "restart"})


STATUSES = ("wrong_answer", "runtime_error", "timeout", "memory_exceeded", "output_exceeded", "syntax_error")
