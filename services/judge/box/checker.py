# ruff: noqa: SIM105, UP031, F821
# mypy: ignore-errors
# (runs inside the sandbox, prepended to harness.py: plain, unannotated, standard library only)
"""Sandbox side of ``check`` tests: the asserts and the program never share a process.

(Over 500 lines on purpose: prepended to the harness as one in-sandbox script; the checker server, the
proxy objects the program sees and the value codec are one protocol and change together.)

Each container has one long-lived *checker* process (:func:`checker_server`), started by the harness,
running as a uid of its own (``uid + 1_000_000``, distinct from the programs' uid) and not dumpable.
For every attempt of a program the container's zygote forks a fresh *program* process (the container's
program uid, the program's rlimits, the seccomp filter) whose job file holds only the program and its
entry point, never the check, and the harness hands the checker one end of a socket pair to it (SCM_RIGHTS over a Unix
socket that programs never get). The program process executes the untrusted program and serves calls
(:func:`serve_program`): ``candidate(...)`` and any other top-level name of the program the check uses
(HumanEval's ``poly``, or the entry point called by name) are proxies in the checker that send the
arguments and get back the return value as a marshal frame, accepted only if it is made of plain
built-in values (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``). Four more shapes cross as data and are rebuilt here by the
checker's own classes: a ``Fraction`` or ``Decimal`` (as its numbers), an iterator or generator
(materialised in the program process under the case's limits, rebuilt as an iterator over the items),
a ``range``, and any other object as an *opaque* value that keeps only its truth value (so
``assert candidate(s)`` on a ``re.Match`` works, while ``==`` with anything but itself is False).
Arguments the candidate mutates (a list it sorts in place) are sent back and applied to the checker's
objects. The asserts run in the checker, in a fresh namespace per case
(pristine builtins, the check's prelude re-executed), so a program can neither override ``__eq__``, nor
patch builtins, the checker or the harness, nor forge a result: it can only return values. Exceptions of
built-in types raised by the candidate are re-raised in the checker (so ``except ValueError`` in a check
works), but the case fails whatever the check does with it: an exception is never a pass, even one that
ends an iterator under ``all(map(...))``. A program process that dies, hangs past the case's time limit or is killed decides that case
(the harness, its parent, reads its wait status) and a fresh one continues with the next case.

The checker executes the tests' own code (test specs are trusted input, like the datasets they come
from); it is replaced after ``CHECKER_JOBS`` programs, whenever it stops answering, and with its container.

Limits: arguments must be plain values (a lambda passed to the candidate is a runtime error), only
mutations of list, dict and set arguments are seen by the check, and a program name the check uses is
always called, never read as a value.
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


class FrameTooLarge(Exception):
    """A reply over the output limit."""


def recv_frame(fd, limit):
    """One frame, or None at EOF; frames above ``limit`` bytes are refused."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > limit:
        raise FrameTooLarge("returned value over %d bytes" % limit)
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
_MUTABLE = (list, dict, set)


def _safe_str(e):
    try:
        return str(e)[:300]
    except BaseException:
        return "(unprintable)"


def value_reply(x, plain):
    """Program side: ``("v", shape, payload)`` for a return value (see the module docstring)."""
    try:
        return ("v", "plain", plain(x))
    except NotPlain:
        pass
    import decimal
    import fractions

    t = type(x)
    if t is range:
        return ("v", "range", (x.start, x.stop, x.step))
    if t is fractions.Fraction:
        num, den = plain(x.numerator), plain(x.denominator)
        if type(num) is not int or type(den) is not int or den == 0:
            raise NotPlain("returned a broken Fraction")
        return ("v", "frac", (num, den))
    if t is decimal.Decimal:
        return ("v", "dec", decimal.Decimal.__str__(x))
    if hasattr(t, "__next__") and hasattr(t, "__iter__"):
        return ("v", "iter", plain(list(x)))
    name = getattr(t, "__name__", "object")
    return ("v", "opaque", (str(name)[:100] if type(name) is str else "object", bool(x)))


def serve_program(job, rfd, wfd):
    """Program process: load the program, then answer call requests until the checker goes away."""
    _no_dump()
    plain = make_runner_tools()[1]
    prog_ns = {"__name__": "__btp_solution__", "__builtins__": __import__("builtins")}
    sys.modules["__main__"] = type(sys)("__main__")
    try:
        exec(compile(job["program"], "<program>", "exec"), prog_ns)
        load = ("ok",)
    except BaseException as e:
        if isinstance(e, SystemExit):
            load = ("st", "runtime_error", "program exited (SystemExit %r) while loading" % (e.code,))
        elif isinstance(e, SyntaxError):
            load = ("st", "syntax_error", "%s: %s" % (type(e).__name__, _safe_str(e)))
        else:
            status, detail = classify_exception(e)
            load = ("st", status, "while loading: " + detail)
    send_frame(wfd, load)
    if load[0] != "ok":
        return
    entry = job["entry_point"]
    _dumps = _marshal.dumps
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
            watch = any(type(a) in _MUTABLE for a in args) or any(type(a) in _MUTABLE for a in kwargs.values())
            before = _dumps((args, kwargs)) if watch else None
            out = value_reply(prog_ns[name](*args, **kwargs), plain)
            mutated = None
            if watch:
                try:
                    if _dumps((args, kwargs)) != before:
                        mutated = plain((args, kwargs))
                except (ValueError, NotPlain):
                    mutated = None  # the candidate put something unsendable in its argument: not seen
            out = (*out, mutated)
        except BaseException as e:
            if isinstance(e, NotPlain):
                out = ("st", "wrong_answer", _safe_str(e))
            elif isinstance(e, Exception) and not isinstance(e, (MemoryError, OSError)):
                out = ("exc", type(e).__name__, _safe_str(e))
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


class ProgramObject:
    """What the checker sees of a non-value the program returned: its type name and truth value."""

    __slots__ = ("_name", "_truth")

    def __init__(self, name, truth):
        self._name = name
        self._truth = truth

    def __bool__(self):
        return self._truth

    def __repr__(self):
        return "<%s object returned by the program>" % self._name


def rebuild(shape, payload):
    """Checker side: the value a program reply stands for, built from checked plain data only."""
    import decimal
    import fractions

    if shape == "plain":
        return plain_value(payload)
    if shape == "iter" and type(payload) is list:
        return iter(plain_value(payload))
    if shape == "range" and type(payload) is tuple and len(payload) == 3 and all(type(v) is int for v in payload):
        return range(*payload)
    if shape == "frac" and type(payload) is tuple and len(payload) == 2 and all(type(v) is int for v in payload):
        return fractions.Fraction(payload[0], payload[1])
    if shape == "dec" and type(payload) is str and len(payload) < 10000:
        return decimal.Decimal(payload)
    if shape == "opaque" and type(payload) is tuple and len(payload) == 2:
        name, truth = payload
        if type(name) is str and type(truth) is bool:
            return ProgramObject(name, truth)
    raise NotPlain("malformed value from the program")


def sync_in_place(orig, new, depth=0):
    """Apply the candidate's mutation of an argument (``new``) to the checker's object ``orig``."""
    if depth > 50:
        return
    if type(orig) is list and type(new) is list:
        if len(orig) != len(new):
            orig[:] = new
            return
        for i in range(len(orig)):
            if type(orig[i]) in _MUTABLE and type(orig[i]) is type(new[i]):
                sync_in_place(orig[i], new[i], depth + 1)
            else:
                orig[i] = new[i]
    elif type(orig) is dict and type(new) is dict:
        if orig.keys() != new.keys():
            orig.clear()
            orig.update(new)
            return
        for k in new:
            if type(orig[k]) in _MUTABLE and type(orig[k]) is type(new[k]):
                sync_in_place(orig[k], new[k], depth + 1)
            else:
                orig[k] = new[k]
    elif type(orig) is set and type(new) is set:
        orig.clear()
        orig.update(new)


_TIMED_OUT = [False]


def check_job(job, start, psock, emit, pristine_builtins):
    """Run cases ``start..`` of one program against its program process (socket ``psock``).

    Returns ``"restart"`` after a case that left the program process dead or stuck: the harness then
    starts a fresh program process for the next case.
    """
    c2p_w = p2c_r = psock
    limits = job["limits"]
    time_s = float(limits["time_s"])
    n = len(job["cases"])
    frame_limit = int(limits["output_kb"]) * 1024 + 4096
    # "failed": how the candidate failed during the current case, whatever the check did with it
    state = {"new_case": False, "failed": None}

    def died(what):
        """The program process is gone: the harness (its parent) decides the case from its wait status."""
        return CandidateFailed("died", what)

    def receive(what):
        try:
            out = recv_frame(p2c_r, frame_limit)
        except FrameTooLarge as e:
            raise CandidateFailed("output_exceeded", str(e)) from None
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
        try:
            out = receive("during the call")
        except CandidateFailed as e:
            state["failed"] = state["failed"] or (e.status, e.detail)
            raise
        if out[0] == "v" and len(out) == 4:
            try:
                value = rebuild(out[1], out[2])
                if out[3] is not None:
                    new_args, new_kwargs = plain_value(out[3])
                    for old, new in zip(args, new_args, strict=False):
                        sync_in_place(old, new)
                    for k, old in kwargs.items():
                        if k in new_kwargs:
                            sync_in_place(old, new_kwargs[k])
            except (NotPlain, TypeError, ValueError, ArithmeticError) as e:
                state["failed"] = state["failed"] or ("wrong_answer", str(e)[:300])
                raise CandidateFailed("wrong_answer", str(e)) from None
            return value
        detail = str(out[2]) if len(out) > 2 else ""
        if out[0] == "exc" and len(out) == 3:
            state["failed"] = state["failed"] or ("runtime_error", "the candidate raised %s: %s" % (out[1], detail))
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
        state["failed"] = state["failed"] or (status, detail)
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
            state["failed"] = None
            _TIMED_OUT[0] = False
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
        t = (time.perf_counter() - t0) * 1000.0
        failed = state["failed"]
        if "died" in msg:
            pass
        elif _TIMED_OUT[0] or t > time_s * 1000.0:
            # over the limit is a timeout, even when the check swallowed the alarm or the value came late
            msg = {"i": i, "status": "timeout", "detail": "time limit exceeded"}
            stop = True
        elif failed is not None:
            # the candidate failed during this case: no check can turn that into a pass
            if failed[0] == "died":
                msg = {"i": i, "died": failed[1]}
            else:
                msg = {"i": i, "status": failed[0] if failed[0] in STATUSES else "runtime_error", "detail": failed[1][:500]}
            stop = stop or failed[0] not in ("wrong_answer", "runtime_error")
        msg["t"] = t
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
        _TIMED_OUT[0] = True
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


class CheckerSupervision:
    """Harness side of ``check`` tests (mixed into the harness): the long-lived checker and the program
    processes of each attempt."""

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
                child_setup(self.cfg, None, [devnull, devnull, devnull, b.fileno()], uid=checker_uid)
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
        got = self.poll_exit(pid, GRACE_S)
        if got is not None:
            return got[0], got[1], False
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        status, rss = self.wait_status(pid)
        return status, rss, False

    def judge_check(self, job):
        """``check`` with the separate checker: a program process per attempt, the checker runs asserts."""
        import socket

        limits = job["limits"]
        n = len(job["cases"])
        results = [None] * n
        time_s = float(limits["time_s"])
        # the program process learns the program and its entry point: never the check
        program_job = {"program": job["program"], "entry_point": job["entry_point"]}
        start = 0
        devnull = os.open("/dev/null", os.O_RDWR)
        try:
            while start < n:
                if self.budget_spent():
                    break
                self.ensure_checker()
                a, b = socket.socketpair()
                out = os.open(PATHS["private"] + "/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    self.spawn_send("program", limits, [devnull, out, out, b.fileno()], program_job)
                finally:
                    b.close()
                    os.close(out)
                # the checker gets its job while the zygote forks the program process
                body = json.dumps(dict(job, start=start)).encode("utf-8")
                try:
                    socket.send_fds(self.ck["sock"], [len(body).to_bytes(4, "big")], [a.fileno()])
                    self.ck["sock"].sendall(body)
                except OSError:
                    self.stop_checker()
                a.close()
                pid = self.spawn_wait()
                nxt = start
                deadline = min(time.monotonic() + 2 * time_s + GRACE_S, self.budget_end)
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
                    if not isinstance(i, int) or i != nxt:
                        continue
                    if "died" in msg:
                        status, rss, _ = self.wait_program(pid, limits)
                        st, detail = self.death_verdict(status, rss, False, limits, str(msg["died"]))
                        msg = {"i": i, "status": st, "detail": detail, "t": msg.get("t", 0.0)}
                    results[i] = msg
                    nxt = i + 1
                    deadline = min(time.monotonic() + time_s + GRACE_S, self.budget_end)
                if not finished:
                    # the checker is stuck (a check that ignores its alarm) or gone, or the budget ran out
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
                self.kill_all()  # the zygote reports this child's exit; the next spawn consumes it
                start = nxt
        finally:
            os.close(devnull)
        if self.ck is not None and self.ck["jobs"] >= CHECKER_JOBS:
            self.stop_checker()
        return {"cases": results}
