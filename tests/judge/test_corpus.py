"""The hostile corpus (issue 13): programs written to cheat the judge, escape its limits or leave something
behind for the next program. Real bubblewrap containers, nothing mocked.

Every attack asserts
1. the exact per-case statuses and the verdict (never ``passed``); a set of statuses only where the outcome
   is genuinely open, each with the reason next to it;
2. that the service still answers ``/health`` and still passes a trivial correct program;
3. that the next program run in the same container sees nothing the attacker left: one container
   (``workers=1``) runs the attack, then a *witness* program that looks for files in every writable place,
   processes of the programs' uid, environment variables, SysV IPC objects, named and abstract unix
   sockets, inet sockets, POSIX message queues, kernel keys and the marker name every attack tries to
   leave, and that /work, /tmp and /dev/shm still work. It returns ``"clean"`` or raises with what it found.

A failing witness is followed by a janitor program (removes what it can, kernel keys included) and a fresh
app, so one leak does not fail the attacks after it.

Classes (``Attack.group``): forge, vacuous, time, output, channel, limits, lax, size, classic.
The ``call``/``check`` programs define ``f``; "refused" paths return 2 where the tests expect 1, so an
attack that gets through shows up as ``passed`` and one that is stopped as ``wrong_answer``.
"""

from __future__ import annotations

import contextlib
import os
import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.errors import PayloadTooLargeError
from services.judge.app import create_app

from .conftest import SECRET_ENV, assert_serving, check_tests, leftovers, make_settings, unique_uid_base

# uids base+4.. of this session's block of 8: never shared with the session's other judge apps
UID_BASE = unique_uid_base() + 4
TOKEN = os.urandom(6).hex()  # expected values of the forge tests: `tok<arg>-<TOKEN>`, unguessable
MARKER = "btpc" + os.urandom(4).hex()  # the name every channel/daemon attack tries to leave behind
SECRET = SECRET_ENV[1]
MAX_PROGRAM = 1_048_576

WA, RE, TO, ME, OE = "wrong_answer", "runtime_error", "timeout", "memory_exceeded", "output_exceeded"
STATUSES = {WA, RE, TO, ME, OE, "syntax_error"}
# bytes an attack writes on a descriptor the judge may use as its result channel: depending on where they
# land in the channel's framing, the judge drops them (the program's real, wrong answer decides:
# wrong_answer), reads a malformed reply (runtime_error) or reads a length header announcing a reply over the
# cap (output_exceeded); none of them lets the forged bytes pass a case
CHANNEL_GARBAGE = frozenset({WA, RE, OE})

# ---------------------------------------------------------------------------------------------- tests


def call1(expected: Any = 1, args: list[Any] | None = None) -> dict[str, Any]:
    return {"kind": "call", "fn_name": "f", "cases": [{"args": args or [], "expected": expected}]}


def stdio1(output: str = "1\n", inp: str = "1\n") -> dict[str, Any]:
    return {"kind": "stdio", "cases": [{"input": inp, "output": output}]}


CHECK1 = check_tests("candidate() == 1")
CHECK2 = check_tests("candidate() == 1", "candidate() == 1")
CALL1 = call1()
CALL2 = {"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": 1}, {"args": [], "expected": 1}]}
STDIO1 = stdio1()
FORGE_CHECK = check_tests(f"candidate(1) == 'tok1-{TOKEN}'", f"candidate(2) == 'tok2-{TOKEN}'")
FORGE_CHECK_PRELUDE = {
    "kind": "check",
    "entry_point": "f",
    "code": f"EXPECTED = {{1: 'tok1-{TOKEN}', 2: 'tok2-{TOKEN}'}}\n\n\ndef check(candidate):\n"
    "    assert candidate(1) == EXPECTED[1]\n    assert candidate(2) == EXPECTED[2]\n",
}
FORGE_CALL = {
    "kind": "call",
    "fn_name": "f",
    "cases": [{"args": [1], "expected": f"tok1-{TOKEN}"}, {"args": [2], "expected": f"tok2-{TOKEN}"}],
}
FORGE_STDIO = stdio1(f"tok1-{TOKEN}\n")


def whole_check(body: str) -> dict[str, Any]:
    """A check whose body is not a plain sequence of asserts: the whole check is one case."""
    return {"kind": "check", "entry_point": "f", "code": "def check(candidate):\n" + textwrap.indent(textwrap.dedent(body), "    ")}


# ---------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Attack:
    id: str
    group: str
    program: str
    tests: dict[str, Any]
    expect: tuple[str | frozenset[str], ...]  # per case: the status, or the statuses allowed (see `why`)
    limits: dict[str, Any] | None = None
    why: str = ""  # why a case may end more than one way (required with a set)
    batch: bool = False  # judged in /v1/judge/batch next to a correct program, which must pass
    http: int = 200  # 413: refused whole, nothing runs


def src(*parts: str) -> str:
    """A program from dedented parts (shared preludes first), with the session's names filled in."""
    text = "\n".join(textwrap.dedent(p).strip("\n") + "\n" for p in parts)
    return text.replace("@MARKER@", MARKER).replace("@SECRET@", SECRET).replace("@TOKEN@", "tok%d-[0-9a-f]{12}")


# ctypes prelude: `sc(nr, *args)` passes every integer as a C long (the raw syscall ABI)
SYS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def sc(nr, *args):
    return libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
"""

# the forging programs' search: any object graph reachable from `roots` for `tok<x>-<12 hex>`
DEEP = '''
import gc, re, sys, types


def _deep(roots, x, budget=600000):
    pat = re.compile("@TOKEN@" % x)
    stack, seen = list(roots), set()
    while stack and budget > 0:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        budget -= 1
        t = type(o)
        try:
            if t is str:
                m = pat.search(o)
                if m:
                    return m.group(0)
            elif t in (bytes, bytearray):
                m = pat.search(bytes(o).decode("latin-1"))
                if m:
                    return m.group(0)
            elif t is dict or t is types.MappingProxyType:
                stack.extend(o.keys())
                stack.extend(o.values())
            elif t in (list, tuple, set, frozenset):
                stack.extend(o)
            elif t is types.CodeType:
                stack.extend(o.co_consts)
            elif t is types.FunctionType:
                stack.extend((o.__code__, o.__globals__, o.__defaults__, o.__kwdefaults__))
                for cell in o.__closure__ or ():
                    try:
                        stack.append(cell.cell_contents)
                    except ValueError:
                        pass
            elif t is types.FrameType:
                stack.extend((o.f_locals, o.f_globals, o.f_code, o.f_back))
            elif t is types.TracebackType:
                stack.extend((o.tb_frame, o.tb_next))
            elif t is types.MethodType:
                stack.extend((o.__func__, o.__self__))
            elif t in (types.GeneratorType, types.CoroutineType):
                stack.append(getattr(o, "gi_frame", None) or getattr(o, "cr_frame", None))
            elif t is types.ModuleType:
                stack.append(vars(o))
            else:
                d = getattr(o, "__dict__", None)
                if type(d) in (dict, types.MappingProxyType):
                    stack.append(d)
                for name in getattr(t, "__slots__", ()) or ():
                    stack.append(getattr(o, name, None))
        except Exception:
            pass
    return None


def _frames():
    out, fr = [], sys._getframe(1)
    while fr is not None:
        out.append(fr)
        fr = fr.f_back
    return out
'''

# the forging programs' memory search: every readable mapping of a process, for `tok<x>-<12 hex>`
MEMSCAN = '''
import os, re


def _memscan(pid, x):
    pat = re.compile(("@TOKEN@" % x).encode())
    if pid == "self":
        try:
            import ctypes

            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: our own /proc/self/mem opens again
        except Exception:
            pass
    try:
        with open("/proc/%s/maps" % pid) as fh:
            maps = fh.read().splitlines()
        fd = os.open("/proc/%s/mem" % pid, os.O_RDONLY)
    except OSError:
        return None
    try:
        for line in maps:
            cols = line.split()
            if "r" not in cols[1] or (len(cols) > 5 and cols[5].startswith("[v")):
                continue
            lo, hi = (int(v, 16) for v in cols[0].split("-"))
            if hi - lo > (96 << 20):
                continue
            try:
                data = os.pread(fd, hi - lo, lo)
            except OSError:
                continue
            m = pat.search(data)
            if m:
                return m.group(0).decode()
    finally:
        os.close(fd)
    return None
'''

FORGE_LIMITS = {"time_s": 3.0, "memory_mb": 512}

FORGE = [
    Attack("forge_getframe", "forge", src(DEEP, """
        def f(x):
            return _deep(_frames(), x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_traceback_frames", "forge", src(DEEP, """
        def f(x):
            try:
                raise ValueError("look up")
            except ValueError as e:
                tb = e.__traceback__
            frames, fr = [], tb.tb_frame
            while fr is not None:
                frames.append(fr)
                fr = fr.f_back
            return _deep([tb] + frames, x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_inspect_stack", "forge", src(DEEP, """
        import inspect, linecache


        def f(x):
            roots = []
            try:
                for fi in inspect.stack(context=500):
                    roots += ["".join(fi.code_context or ()), "".join(linecache.getlines(fi.filename)), fi.frame]
            except Exception:
                pass
            return _deep(roots, x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_gc_get_objects", "forge", src(DEEP, """
        def f(x):
            return _deep(gc.get_objects(), x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_gc_unfreeze", "forge", src(DEEP, """
        def f(x):
            gc.unfreeze()  # the objects a forking parent froze become visible again
            return _deep(gc.get_objects(), x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_gc_get_referrers", "forge", src(DEEP, """
        def f(x):
            roots = []
            for obj in [f, globals(), sys.modules] + _frames():
                roots += gc.get_referrers(obj)
            for fr in _frames():
                roots += gc.get_referrers(fr.f_code) + gc.get_referrers(fr.f_globals)
            return _deep(roots, x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_sys_modules_main", "forge", src(DEEP, """
        def f(x):
            main = sys.modules.get("__main__")
            roots = [sys.modules, vars(main) if main else {}, sys.argv, sys.path]
            roots += [vars(m) for m in list(sys.modules.values()) if m is not None]
            return _deep(roots, x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_at_import", "forge", src(DEEP, """
        gc.unfreeze()
        FOUND = {x: _deep([sys._getframe()] + gc.get_objects(), x) for x in (1, 2)}


        def f(x):
            return FOUND.get(x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_prelude_constants", "forge", src(DEEP, MEMSCAN, """
        def f(x):
            gc.unfreeze()
            return _deep(_frames() + gc.get_objects() + [sys.modules], x) or _memscan("self", x) or "none"
        """), FORGE_CHECK_PRELUDE, (WA, WA), FORGE_LIMITS),
    Attack("forge_proc_self_mem", "forge", src(MEMSCAN, """
        def f(x):
            return _memscan("self", x) or "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_proc_others_mem", "forge", src(MEMSCAN, """
        def f(x):
            for pid in [os.getppid(), 1] + [p for p in os.listdir("/proc") if p.isdigit()]:
                if str(pid) != str(os.getpid()):
                    found = _memscan(pid, x)
                    if found:
                        return found
            return "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_proc_cmdline_environ_fds", "forge", src("""
        import os, re


        def f(x):
            pat = re.compile(("@TOKEN@" % x).encode())
            me = str(os.getpid())
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                paths = ["/proc/%s/%s" % (pid, n) for n in ("cmdline", "environ", "maps", "stack", "syscall")]
                try:
                    paths += ["/proc/%s/fd/%s" % (pid, fd) for fd in os.listdir("/proc/%s/fd" % pid)]
                except OSError:
                    pass
                for path in paths:
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                    except OSError:
                        continue
                    try:
                        m = pat.search(os.read(fd, 1 << 22))
                    except OSError:
                        m = None
                    finally:
                        os.close(fd)
                    if m:
                        return m.group(0).decode()
            return "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_parent_stdin", "forge", src("""
        import os, re


        def f(x):
            pat = re.compile(("@TOKEN@" % x).encode())
            for pid in (os.getppid(), 1, 2):
                for fdn in (0, 1, 3, 4, 5, 6):
                    try:
                        fd = os.open("/proc/%d/fd/%d" % (pid, fdn), os.O_RDONLY | os.O_NONBLOCK)
                    except OSError:
                        continue
                    try:
                        m = pat.search(os.read(fd, 1 << 22))
                        if m:
                            return m.group(0).decode()
                    except OSError:
                        pass
                    finally:
                        os.close(fd)
            return "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_inherited_descriptors", "forge", src("""
        import os, re, socket, stat


        def f(x):
            pat = re.compile(("@TOKEN@" % x).encode())
            data = b""
            for fd in range(1024):
                try:
                    st = os.fstat(fd)
                except OSError:
                    continue
                try:
                    if stat.S_ISSOCK(st.st_mode):
                        s = socket.socket(fileno=os.dup(fd))
                        try:
                            data += s.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                        except OSError:
                            pass
                        s.detach()
                    elif stat.S_ISREG(st.st_mode):
                        data += os.pread(fd, 1 << 22, 0)
                except OSError:
                    pass
            m = pat.search(data)
            return m.group(0).decode() if m else "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    # reading (consuming) what arrives on the judge's channel descriptors may disturb the channel
    Attack("forge_reads_result_channel", "forge", src("""
        import os, re, fcntl


        def f(x):
            pat = re.compile(("@TOKEN@" % x).encode())
            for fd in range(3, 16):
                try:
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
                    m = pat.search(os.read(fd, 1 << 20))
                    if m:
                        return m.group(0).decode()
                except OSError:
                    pass
            return "none"
        """), FORGE_CHECK, (CHANNEL_GARBAGE | {"timeout"}, CHANNEL_GARBAGE | {"timeout"}), FORGE_LIMITS,
        # consuming the checker's call frame leaves the checker waiting for an answer: a timeout
        why="channel garbage, or the checker's request eaten"),
    Attack("forge_fake_result_lines_on_stdout", "forge", src("""
        import json, os, sys


        def f(x):
            fake = [{"i": i, "status": "passed", "detail": "", "t": 0} for i in range(4)]
            for fd in (1, 2):
                for line in fake:
                    os.write(fd, (json.dumps(line) + "\\n").encode())
                os.write(fd, b"passed\\nOK\\nAll tests passed\\n" + b"0" * 32 + b"\\t" + json.dumps(fake[0]).encode() + b"\\n")
            print(json.dumps({"verdict": "passed", "pass_rate": 1.0}))
            sys.stdout.flush()
            return "none"
        """), FORGE_CHECK, (WA, WA), FORGE_LIMITS),
    Attack("forge_writes_result_channel", "forge", src("""
        import json, marshal, os


        def f(x):
            line = json.dumps({"i": x - 1, "status": "passed", "detail": "", "t": 0})
            junk = [line.encode() + b"\\n", b"0" * 32 + b"\\t" + line.encode() + b"\\n", b"{\\"done\\": true}\\n"]
            frame = marshal.dumps(("v", "tok%d-000000000000" % x))
            junk.append(len(frame).to_bytes(4, "big") + frame)
            junk.append(marshal.dumps(("st", "passed", "")))
            for fd in range(3, 16):
                for blob in junk:
                    try:
                        os.write(fd, blob)
                    except OSError:
                        pass
            return "none"
        """), FORGE_CHECK, (CHANNEL_GARBAGE, CHANNEL_GARBAGE), FORGE_LIMITS, why="channel garbage"),
    Attack("forge_guesses_secret_call", "forge", src(DEEP, """
        import json, os


        def _secrets():
            gc.unfreeze()
            found = set()
            pat = re.compile("^[0-9a-f]{16,64}$")
            stack = _frames() + gc.get_objects()
            for o in stack:
                try:
                    if type(o) is types.FrameType:
                        stack.extend(o.f_locals.values())
                    elif type(o) is types.FunctionType:
                        stack.extend(c.cell_contents for c in (o.__closure__ or ()))
                    elif type(o) is str and pat.match(o):
                        found.add(o)
                except Exception:
                    pass
                if len(stack) > 300000:
                    break
            return found


        def f(x):
            for secret in [""] + list(_secrets())[:200] + [os.urandom(16).hex() for _ in range(50)]:
                for i in (0, 1):
                    for msg in ({"i": i, "status": "passed", "detail": "", "t": 0},
                                {"i": i, "status": "value", "value": "tok%d-%s" % (i + 1, "0" * 12), "t": 0}):
                        for fd in (3, 4, 5):
                            try:
                                os.write(fd, ((secret + "\\t" if secret else "") + json.dumps(msg) + "\\n").encode())
                            except OSError:
                                pass
            return "none"
        """), FORGE_CALL, (CHANNEL_GARBAGE, CHANNEL_GARBAGE), FORGE_LIMITS, why="channel garbage"),
    # `call` expected values never enter the sandbox, but the same tokens were in the check tests judged
    # before this one in the same container: a program must not inherit memory that held other jobs' tests
    Attack("forge_call_everything", "forge", src(DEEP, MEMSCAN, """
        def f(x):
            gc.unfreeze()
            return _deep(_frames() + gc.get_objects() + [sys.modules], x) or _memscan("self", x) or "none"
        """), FORGE_CALL, (WA, WA), FORGE_LIMITS),
    Attack("forge_stdio_memory", "forge", src(DEEP, MEMSCAN, """
        gc.unfreeze()
        print(_deep([sys._getframe()] + gc.get_objects() + [sys.modules], 1) or _memscan("self", 1) or "none")
        """), FORGE_STDIO, (WA,), FORGE_LIMITS),
]

# --------------------------------------------------------------------------- (2) vacuous asserts


def raises(exc: str) -> str:
    return f"def f(*args):\n    raise {exc}\n"


VACUOUS = [
    Attack("vacuous_all_map_stopiteration", "vacuous", raises("StopIteration"),
           check_tests("all(map(lambda p: candidate(p[0]) == p[1], [(1, 2), (2, 3)]))"), (RE,)),
    Attack("vacuous_all_map_generatorexit", "vacuous", raises("GeneratorExit"),
           check_tests("all(map(lambda p: candidate(p[0]) == p[1], [(1, 2), (2, 3)]))"), (RE,)),
    Attack("vacuous_all_map_keyboardinterrupt", "vacuous", raises("KeyboardInterrupt"),
           check_tests("all(map(lambda p: candidate(p[0]) == p[1], [(1, 2), (2, 3)]))"), (RE,)),
    Attack("vacuous_all_map_systemexit", "vacuous", raises("SystemExit(0)"),
           check_tests("all(map(lambda p: candidate(p[0]) == p[1], [(1, 2), (2, 3)]))"), (RE,)),
    Attack("vacuous_not_any_map_stopiteration", "vacuous", raises("StopIteration"),
           check_tests("not any(map(lambda x: candidate(x) != x + 1, [1, 2]))"), (RE,)),
    Attack("vacuous_zip_map_stopiteration", "vacuous", raises("StopIteration"),
           check_tests("all(a == b for a, b in zip(map(candidate, [1, 2]), [2, 3]))"), (RE,)),
    Attack("vacuous_set_map_subset", "vacuous", raises("StopIteration"),
           check_tests("set(map(candidate, [1, 2])) <= {2, 3}"), (RE,)),
    Attack("vacuous_next_filter_default", "vacuous", raises("StopIteration"),
           check_tests("next(filter(lambda x: candidate(x) != x + 1, [1, 2]), None) is None"), (RE,)),
    Attack("vacuous_sum_map_zero", "vacuous", raises("StopIteration"),
           check_tests("sum(map(lambda x: candidate(x) != x + 1, (1, 2))) == 0"), (RE,)),
    Attack("vacuous_three_asserts", "vacuous", raises("StopIteration()"),
           check_tests("all(map(lambda x: candidate(x) == x + 1, [1]))", "not any(map(lambda x: candidate(x) != x, [2]))",
                       "list(map(candidate, [3])) == list(map(candidate, [4]))"), (RE, RE, RE)),
    Attack("vacuous_generator_check", "vacuous", raises("StopIteration"), whole_check("""
        def gen():
            for x in (1, 2):
                yield candidate(x) == x + 1
        assert all(gen())
        """), (RE,)),
    Attack("vacuous_check_catches_exception", "vacuous", raises("ValueError('no')"), whole_check("""
        try:
            r = candidate(1)
        except Exception:
            r = 2
        assert r == 2
        """), (RE,)),
    Attack("vacuous_check_catches_baseexception", "vacuous", raises("GeneratorExit"), whole_check("""
        try:
            r = candidate(1)
        except BaseException:
            r = 2
        assert r == 2
        """), (RE,)),
    Attack("vacuous_raises_assertionerror", "vacuous", raises("AssertionError('candidate(1) == 2 holds')"),
           check_tests("candidate(1) == 2"), (RE,)),
    Attack("vacuous_call_stopiteration", "vacuous", raises("StopIteration"), CALL2, (RE, RE)),
]

# --------------------------------------------------------------------------- (3) over the time limit

ONE_S = {"time_s": 1.0}
OVER = "1.15"  # seconds: just over time_s = 1.0

TIME = [
    Attack("time_call_sigalrm_ignored", "time", src(f"""
        import signal, time


        def f():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            time.sleep({OVER})
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_signals_blocked", "time", src(f"""
        import signal, time


        def f():
            signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {{signal.SIGKILL, signal.SIGSTOP}})
            time.sleep({OVER})
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_itimer_disarmed", "time", src(f"""
        import signal, time


        def f():
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.alarm(0)
            time.sleep({OVER})
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_noop_alarm_handler", "time", src(f"""
        import signal, time


        def f():
            for s in (signal.SIGALRM, signal.SIGXCPU, signal.SIGVTALRM, signal.SIGPROF, signal.SIGTERM):
                signal.signal(s, lambda *a: None)
            end = time.monotonic() + {OVER}
            while time.monotonic() < end:
                time.sleep(0.01)
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_busy_cpu_signals_blocked", "time", src(f"""
        import signal, time


        def f():
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM, signal.SIGXCPU, signal.SIGVTALRM}})
            end = time.monotonic() + {OVER}
            while time.monotonic() < end:
                pass
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_busy_threads", "time", src(f"""
        import signal, threading, time


        def spin(end):
            while time.monotonic() < end:
                pass


        def f():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            end = time.monotonic() + {OVER}
            ts = [threading.Thread(target=spin, args=(end,)) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_select_wait", "time", src(f"""
        import select, signal


        def f():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            select.select([], [], [], {OVER})
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_waits_for_child", "time", src(f"""
        import os, signal, time


        def f():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep({OVER})
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_call_sleep_at_import", "time", src(f"""
        import signal, time
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep({OVER})


        def f():
            return 1
        """), CALL1, (TO,), ONE_S),
    Attack("time_check_sigalrm_ignored", "time", src(f"""
        import signal, time


        def f():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            time.sleep({OVER})
            return 1
        """), CHECK2, (TO, TO), ONE_S),
    Attack("time_check_signals_blocked", "time", src(f"""
        import signal, time


        def f():
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM}})
            time.sleep({OVER})
            return 1
        """), CHECK1, (TO,), ONE_S),
    Attack("time_stdio_sleep_then_answer", "time", src(f"""
        import time
        time.sleep({OVER})
        print(1)
        """), STDIO1, (TO,), ONE_S),
    Attack("time_stdio_busy_then_answer", "time", src(f"""
        import signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM}})
        end = time.monotonic() + {OVER}
        while time.monotonic() < end:
            pass
        print(input())
        """), STDIO1, (TO,), ONE_S),
    Attack("time_stdio_orphan_answers_late", "time", src(f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            time.sleep({OVER})
            print(1)
            sys.stdout.flush()
        os._exit(0)
        """), STDIO1, (frozenset({WA, TO}),), ONE_S,
           why="the main process exits at once with no output: a judge that ends the run with the main process "
           "sees no output (wrong_answer); one that waits for the whole process tree sees it run over (timeout)"),
]

# --------------------------------------------------------------------------- (4) output built to crash the service

TWELVE_MB = "'x' * 12_000_000"

OUTPUT = [
    Attack("output_float_shape_not_a_number", "output", "def f():\n    return {'__float__': 'not-a-number'}\n",
           call1(1.5), (WA,), batch=True),
    Attack("output_float_shape_nan", "output", "def f():\n    return {'__float__': 'nan'}\n", call1(1.5), (WA,), batch=True),
    Attack("output_float_shape_nested_junk", "output",
           "def f():\n    return [{'__float__': None}, {'__float__': ['x']}, {'__float__': {'a': 1}}]\n",
           call1([1.0, 2.0, 3.0]), (WA,), batch=True),
    Attack("output_huge_int_5000_digits", "output", "def f():\n    return 10 ** 5000\n", CALL1, (WA,), batch=True),
    Attack("output_huge_int_over_output_limit", "output", "def f():\n    return 10 ** 100000\n", CALL1, (OE,),
           {"output_kb": 16}, batch=True),
    Attack("output_deeply_nested_list", "output",
           "def f():\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n", CALL1, (WA,), batch=True),
    Attack("output_deeply_nested_dict", "output",
           "def f():\n    x = {}\n    for _ in range(100000):\n        x = {'k': x}\n    return x\n", CALL1, (WA,), batch=True),
    Attack("output_self_referential_list", "output", "def f():\n    x = [1]\n    x.append(x)\n    return x\n",
           CALL1, (WA,), batch=True),
    Attack("output_12mb_string_call", "output", f"def f():\n    return {TWELVE_MB}\n", call1("x"), (OE,), batch=True),
    Attack("output_12mb_string_16_cases", "output", f"def f():\n    return {TWELVE_MB}\n",
           {"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": "x"}] * 16}, (frozenset({OE, TO}),) * 16,
           # building and refusing 12 MB sixteen times may run into the per-case deadline on a loaded machine
           why="the value is refused, or building it takes longer than the case's time", batch=True),
    Attack("output_12mb_string_check", "output", f"def f():\n    return {TWELVE_MB}\n",
           check_tests("candidate() == 'x'"), (OE,), batch=True),
    Attack("output_fake_result_lines_printed", "output", src("""
        import json, os, sys
        for fd in (1, 2):
            os.write(fd, b'{"i": 0, "status": "passed", "t": 0}\\n{"cases": [{"status": "passed"}]}\\n')


        def f():
            print(json.dumps({"index": 0, "status": "passed", "time_ms": 1.0}))
            sys.stderr.write('{"i": 0, "status": "passed"}\\n')
            return 2
        """), CALL1, (WA,), batch=True),
    Attack("output_fake_status_stdio", "output", src("""
        import os
        os.write(2, b'{"i": 0, "status": "passed"}\\n')
        print('{"pass_rate": 1.0, "verdict": "passed"}')
        print(2)
        """), STDIO1, (WA,), batch=True),
    Attack("output_bytes_to_fds_3_4_5_call", "output", src("""
        import os


        def f():
            for fd in (3, 4, 5):
                for blob in (b"\\xff\\xfe\\x00\\x01" * 1000, b"\\x00\\x00\\x00\\x10" + b"\\x80" * 16, b"\\n\\n\\t{\\n"):
                    try:
                        os.write(fd, blob)
                    except OSError:
                        pass
            return 2
        """), CALL1, (CHANNEL_GARBAGE,), why="channel garbage", batch=True),
    Attack("output_bytes_to_fds_3_4_5_check", "output", src("""
        import os


        def f():
            for fd in (3, 4, 5):
                for blob in (b"\\x7f\\xff\\xff\\xff", b"\\xff" * 4096, b"\\x00\\x00\\x00\\x05\\xe9\\x01\\x02\\x03\\x04"):
                    try:
                        os.write(fd, blob)
                    except OSError:
                        pass
            return 2
        """), CHECK1, (CHANNEL_GARBAGE,), why="channel garbage", batch=True),
    Attack("output_non_utf8_stdout_stdio", "output", "import os\nos.write(1, b'\\xff\\xfe\\xc3\\x28\\xa0\\n')\n",
           STDIO1, (WA,), batch=True),
    Attack("output_non_utf8_stderr_exit_1", "output", "import os, sys\nos.write(2, b'\\xff\\xfe\\xc3\\x28\\n' * 100)\nsys.exit(1)\n",
           STDIO1, (RE,), batch=True),
    Attack("output_lone_surrogate_return", "output", "def f():\n    return '\\udcff\\ud800x'\n", call1("x"), (WA,), batch=True),
    Attack("output_lone_surrogate_exception", "output", "def f():\n    raise ValueError('\\udcff\\ud800' * 100)\n",
           CALL1, (RE,), batch=True),
    Attack("output_lone_surrogate_stdio", "output", "import sys\nsys.stdout.write('\\udcff\\n')\n", STDIO1, (WA,), batch=True),
    Attack("output_huge_exception_message", "output", "def f():\n    raise ValueError('e' * 10_000_000)\n", CHECK1, (RE,),
           batch=True),
    Attack("output_exception_str_raises", "output", src("""
        class E(Exception):
            def __str__(self):
                raise RuntimeError("no str")

            def __repr__(self):
                return 42


        def f():
            raise E()
        """), CALL1, (RE,), batch=True),
    Attack("output_exception_str_never_returns", "output", src("""
        class E(Exception):
            def __str__(self):
                while True:
                    pass

            __repr__ = __str__


        def f():
            raise E()
        """), CALL1, (frozenset({RE, TO}),),
           why="the exception is the case's failure (runtime_error), unless the judge formats it in the program's "
           "process, where formatting runs past the limit (timeout)", batch=True),
    # the candidate's in-place changes to its arguments travel back to the check: make them huge or deep
    Attack("output_mutates_argument_huge", "output", "def f(a):\n    a.extend(range(300_000))\n    return 2\n",
           check_tests("candidate([]) == 1"), (frozenset({WA, OE}),),
           why="the changed argument is over the output limit: the judge counts it (output_exceeded) or drops the "
           "change and the wrong value decides (wrong_answer)", batch=True),
    Attack("output_mutates_argument_deeply", "output",
           "def f(a):\n    x = []\n    for _ in range(100000):\n        x = [x]\n    a.append(x)\n    return 2\n",
           check_tests("candidate([]) == 1"), (frozenset({WA, RE}),),
           why="the changed argument is too deep to carry: the judge drops the change (the wrong value decides: "
           "wrong_answer) or fails the reply (runtime_error)", batch=True),
    Attack("output_code_object_and_module", "output", "import os\n\ndef f():\n    return [f.__code__, os]\n",
           call1([1, 2]), (WA,), batch=True),
]

# --------------------------------------------------------------------------- (5) channels between programs

DAEMON = """
import os, signal, socket, sys, time


def daemonize(body):
    '''Double fork + setsid; the grandchild runs body() and never returns into the judge's code.'''
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                try:
                    body()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
"""

CHANNEL = [
    Attack("channel_posix_mqueue_libc", "channel", src(SYS, """
        def f():
            q = libc.mq_open(b"/@MARKER@", os.O_CREAT | os.O_RDWR, 0o666, None)
            if q >= 0:
                libc.mq_send(q, b"@MARKER@", 8, 0)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_posix_mqueue_syscall", "channel", src(SYS, """
        def f():
            sc(240, b"@MARKER@", os.O_CREAT | os.O_RDWR, 0o666, None)
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_keyring_user", "channel", src(SYS, """
        def f():
            sc(248, b"user", b"@MARKER@", b"payload", 7, -4)  # add_key to KEY_SPEC_USER_KEYRING
            return 2
        """), CALL1, (WA,)),
    Attack("channel_keyring_session", "channel", src(SYS, """
        def f():
            sc(248, b"user", b"@MARKER@", b"payload", 7, -3)  # KEY_SPEC_SESSION_KEYRING
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_keyring_user_session", "channel", src(SYS, """
        def f():
            sc(248, b"user", b"@MARKER@", b"payload", 7, -5)  # KEY_SPEC_USER_SESSION_KEYRING
            sc(248, b"keyring", b"@MARKER@-ring", None, 0, -5)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_keyring_named_session", "channel", src(SYS, """
        def f():
            ring = sc(250, 1, b"@MARKER@")  # KEYCTL_JOIN_SESSION_KEYRING
            sc(248, b"user", b"@MARKER@-in-ring", b"payload", 7, -3)
            if ring >= 0:
                sc(250, 8, ring, -4)  # KEYCTL_LINK it into the user keyring
            return 2
        """), CALL1, (WA,)),
    Attack("channel_request_key_upcall", "channel", src(SYS, """
        def f():
            sc(249, b"user", b"@MARKER@", b"callout", -4)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_sysv_shm", "channel", src(SYS, """
        def f():
            libc.shmat.restype = ctypes.c_void_p
            shm = libc.shmget(0x7B7C0001, 1 << 16, 0o1666)
            if shm >= 0:
                addr = libc.shmat(shm, None, 0)
                if addr not in (None, ctypes.c_void_p(-1).value):
                    ctypes.memmove(addr, b"@MARKER@", 12)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_sysv_sem", "channel", src(SYS, """
        def f():
            libc.semget(0x7B7C0002, 4, 0o1666)
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_sysv_msg", "channel", src(SYS, """
        def f():
            q = libc.msgget(0x7B7C0003, 0o1666)
            if q >= 0:
                msg = ctypes.create_string_buffer(b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00@MARKER@")
                libc.msgsnd(q, msg, 12, 0o4000)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_files_everywhere", "channel", src("""
        import os


        def f():
            for d in ("/work", "/tmp", "/dev/shm", "/var/tmp", "/run", "/run/judge", "/dev", "/", "/dev/pts"):
                for name in ("@MARKER@", ".@MARKER@", "@MARKER@\\nnewline"):
                    try:
                        with open(os.path.join(d, name), "w") as fh:
                            fh.write("@MARKER@")
                    except OSError:
                        pass
            try:
                with open(b"/tmp/@MARKER@-\\xff\\xfe", "w") as fh:
                    fh.write("x")
                os.mkfifo("/work/@MARKER@-fifo")
                os.makedirs("/work/@MARKER@-locked/inner")
                open("/work/@MARKER@-locked/inner/f", "w").close()
                os.chmod("/work/@MARKER@-locked/inner", 0)
                os.chmod("/work/@MARKER@-locked", 0)
                os.symlink("/work/@MARKER@-locked", "/tmp/@MARKER@-link")
                os.link("/tmp/@MARKER@", "/tmp/@MARKER@-hardlink")
            except OSError:
                pass
            return 2
        """), CALL1, (WA,)),
    Attack("channel_posix_shm_and_semaphore", "channel", src(SYS, """
        import _posixshmem


        def f():
            try:
                fd = _posixshmem.shm_open("/@MARKER@", os.O_CREAT | os.O_RDWR, 0o666)
                os.write(fd, b"@MARKER@")
            except OSError:
                pass
            libc.sem_open.restype = ctypes.c_void_p
            libc.sem_open(b"/@MARKER@-sem", os.O_CREAT, 0o666, 1)
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_unix_socket_files", "channel", src("""
        import socket


        def f():
            for path in ("/tmp/@MARKER@.sock", "/work/@MARKER@.sock", "/dev/shm/@MARKER@.sock"):
                s = socket.socket(socket.AF_UNIX)
                s.bind(path)
                s.listen()
            return 2
        """), CALL1, (WA,)),
    Attack("channel_abstract_socket_in_flight", "channel", src("""
        import socket


        def f():
            # a listening abstract socket held only by SCM_RIGHTS messages in flight: no process holds it
            s = socket.socket(socket.AF_UNIX)
            s.bind(b"\\0@MARKER@")
            s.listen()
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            socket.send_fds(a, [b"x"], [s.fileno(), a.fileno(), b.fileno()])
            socket.send_fds(b, [b"x"], [s.fileno(), a.fileno(), b.fileno()])
            return 2
        """), CALL1, (WA,)),
    Attack("channel_inet_sockets_in_flight", "channel", src("""
        import socket


        def f():
            t = socket.socket()
            t.bind(("127.0.0.1", 0))
            t.listen()
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            socket.send_fds(a, [b"x"], [t.fileno(), u.fileno(), a.fileno(), b.fileno()])
            socket.send_fds(b, [b"x"], [t.fileno(), u.fileno(), a.fileno(), b.fileno()])
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_pty_in_flight", "channel", src("""
        import os, socket


        def f():
            m, s = os.openpty()
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            socket.send_fds(a, [b"x"], [m, s, a.fileno(), b.fileno()])
            socket.send_fds(b, [b"x"], [m, s, a.fileno(), b.fileno()])
            return 2
        """), CALL1, (WA,)),
    Attack("channel_daemon_writes_later", "channel", src(DAEMON, """
        def late():
            time.sleep(0.3)
            for d in ("/work", "/tmp", "/dev/shm"):
                with open(d + "/@MARKER@-late", "w") as fh:
                    fh.write("x")
            time.sleep(30)


        def f():
            daemonize(late)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_daemon_ignores_sigterm", "channel", src(DAEMON, """
        def stubborn():
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGPIPE):
                signal.signal(s, signal.SIG_IGN)
            while True:
                time.sleep(0.01)


        def f():
            daemonize(stubborn)
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_daemon_fork_hopping", "channel", src(DAEMON, """
        def hop():
            while True:  # a new pid all the time: kill-by-pid never catches it
                try:
                    if os.fork() != 0:
                        os._exit(0)
                except OSError:
                    time.sleep(0.001)


        def f():
            daemonize(hop)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_daemon_disguised", "channel", src(DAEMON, SYS, """
        def disguised():
            libc.prctl(15, b"bwrap", 0, 0, 0)  # PR_SET_NAME
            try:
                with open("/proc/self/comm", "w") as fh:
                    fh.write("python3")
            except OSError:
                pass
            os.setpgid(0, 0)
            while True:
                time.sleep(0.05)


        def f():
            daemonize(disguised)
            return 2
        """), CALL1, (WA,)),
    Attack("channel_daemon_abstract_listener", "channel", src(DAEMON, """
        def listen():
            s = socket.socket(socket.AF_UNIX)
            s.bind(b"\\0@MARKER@-daemon")
            s.listen()
            t = socket.socket()
            t.bind(("127.0.0.1", 47321))
            t.listen()
            while True:
                time.sleep(0.05)


        def f():
            daemonize(listen)
            time.sleep(0.05)
            return 2
        """), CHECK1, (WA,)),
    Attack("channel_daemon_from_stdio", "channel", src(DAEMON, """
        def linger():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(0.2)
            with open("/tmp/@MARKER@-stdio", "w") as fh:
                fh.write("x")
            time.sleep(30)


        daemonize(linger)
        print(2)
        """), STDIO1, (WA,)),
    Attack("channel_subreaper_keeps_children", "channel", src(DAEMON, SYS, """
        def f():
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back to us, not the harness
            daemonize(lambda: time.sleep(30))
            daemonize(lambda: time.sleep(30))
            return 2
        """), CALL1, (WA,)),
]

# --------------------------------------------------------------------------- (6) limits

CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
# memory bombs: filling 256 MiB takes 0.4-1 s on the loaded 2-core machine (0.55 s even outside the
# sandbox), so they get 3 s and the memory limit, not the clock, decides them
BOMB_TIME = {"time_s": 3.0}

LIMITS = [
    Attack("limits_unshare_user_ctypes", "limits", src(SYS, f"""
        def f():
            return 1 if libc.unshare({CLONE_NEWUSER}) == 0 else 2
        """), CALL1, (WA,)),
    Attack("limits_userns_tmpfs_over_memory", "limits", src(SYS, f"""
        def f():
            uid, gid = os.getuid(), os.getgid()
            libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, or our /proc/self/uid_map is root's
            if libc.unshare({CLONE_NEWUSER | CLONE_NEWNS}) != 0:
                return 2
            for name, text in (("uid_map", "0 %d 1" % uid), ("setgroups", "deny"), ("gid_map", "0 %d 1" % gid)):
                with open("/proc/self/" + name, "w") as fh:
                    fh.write(text)
            os.makedirs("/work/m", exist_ok=True)
            if libc.mount(b"none", b"/work/m", b"tmpfs", 0, b"size=1g") != 0:
                return 2
            block, written = b"x" * 200_000, 0
            for i in range(1000):  # 200 MB in files under the output limit each
                with open("/work/m/fill%d" % i, "wb", buffering=0) as fh:
                    written += fh.write(block)
            return 1 if written >= 200_000_000 else 2
        """), CALL1, (WA,), {"memory_mb": 128, "time_s": 3.0}),
    Attack("limits_unshare_command", "limits", src("""
        import subprocess


        def f():
            try:
                r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
            except OSError:
                return 2
            return 1 if r.returncode == 0 else 2
        """), CALL1, (WA,), {"time_s": 3.0}),
    Attack("limits_clone_newuser", "limits", src(SYS, f"""
        def f():
            pid = sc(56, {CLONE_NEWUSER} | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER | SIGCHLD)
            if pid == 0:
                os._exit(0)
            if pid > 0:
                os.waitpid(pid, 0)
                return 1
            return 2
        """), CALL1, (WA,)),
    Attack("limits_clone3_newuser", "limits", src(SYS, f"""
        def f():
            args = (ctypes.c_uint64 * 11)({CLONE_NEWUSER}, 0, 0, 0, 17)  # struct clone_args: flags, ..., exit_signal
            pid = sc(435, args, 88)
            if pid == 0:
                os._exit(0)
            if pid > 0:
                os.waitpid(pid, 0)
                return 1
            return 2
        """), CALL1, (WA,)),
    # i386 `int 0x80` from a 64-bit process: unshare is 310 there, not 272 (push/pop rbx: callee-saved)
    Attack("limits_unshare_via_i386_abi", "limits", src(f"""
        import ctypes, mmap

        CODE = bytes.fromhex("53b836010000bb{CLONE_NEWUSER.to_bytes(4, 'little').hex()}cd805bc3")


        def f():
            m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            m.write(CODE)
            unshare = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
            return 1 if unshare() == 0 else 2
        """), CALL1, (RE,)),
    # x32 numbers (bit 30 set) name other calls: refused whatever the number
    Attack("limits_unshare_via_x32_abi", "limits", src(SYS, f"""
        def f():
            return 1 if sc(0x40000000 | 272, {CLONE_NEWUSER}) == 0 else 2
        """), CALL1, (WA,)),
    Attack("limits_unshare_other_namespaces", "limits", src(SYS, """
        def f():
            got = [flag for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x20000000, 0x40000000, 0x00000080)
                   if libc.unshare(flag) == 0]
            return 1 if got else 2
        """), CALL1, (WA,)),
    Attack("limits_setns_to_init", "limits", src(SYS, """
        def f():
            joined = 0
            for pid in ("1", str(os.getppid())):
                for ns in ("user", "mnt", "net", "pid", "ipc", "uts", "cgroup"):
                    try:
                        fd = os.open("/proc/%s/ns/%s" % (pid, ns), os.O_RDONLY)
                    except OSError:
                        continue
                    joined += libc.setns(fd, 0) == 0
                    os.close(fd)
            return 1 if joined else 2
        """), CALL1, (WA,)),
    Attack("limits_fork_bomb", "limits", "import os\n\ndef f():\n    while True:\n        os.fork()\n", CALL1, (RE,)),
    Attack("limits_fork_bomb_swallowing_errors", "limits",
           "import os\n\ndef f():\n    while True:\n        try:\n            os.fork()\n        except BaseException:\n            pass\n",
           CHECK1, (TO,)),
    Attack("limits_fork_bomb_stdio", "limits", "import os\nwhile True:\n    os.fork()\n", STDIO1, (RE,)),
    Attack("limits_thread_bomb", "limits", src("""
        import threading, time


        def f():
            while True:
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        """), CALL1, (RE,)),
    Attack("limits_memory_bomb_one_block", "limits", "def f():\n    return len(bytearray(8 * 1024 ** 3))\n", CALL1, (ME,), BOMB_TIME),
    Attack("limits_memory_bomb_growing", "limits",
           "def f():\n    x = []\n    while True:\n        x.append(b'x' * 10 ** 7)\n", CHECK1, (ME,), BOMB_TIME),
    Attack("limits_memory_bomb_stdio", "limits", "x = ' ' * (8 * 1024 ** 3)\nprint(1)\n", STDIO1, (ME,), BOMB_TIME),
    Attack("limits_memory_split_across_children", "limits", src("""
        import os, time


        def f():
            kids = []
            for _ in range(6):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        data = b"x" * (100 << 20)  # written, so resident: 600 MiB for the tree, 100 MiB each
                        time.sleep(0.8)
                        code = 0 if len(data) else 1
                    finally:
                        os._exit(code)
                kids.append(pid)
            ok = [os.waitpid(p, 0)[1] == 0 for p in kids]
            return 1 if all(ok) else 2
        """), CALL1, (frozenset({ME, WA}),), {"memory_mb": 128, "time_s": 3.0},
           why="the tree is over memory_mb: the OOM killer picks its victim by size, a child (the program sees it "
           "die and answers 2: wrong_answer) or the parent (memory_exceeded)"),
    Attack("limits_disk_fill_tmp_caught", "limits", src("""
        def f():
            i = 0
            try:
                while True:
                    with open("/tmp/@MARKER@-%d" % i, "wb") as fh:
                        fh.write(b"x" * 200_000)
                    i += 1
            except OSError:
                return 2
        """), CALL1, (WA,), {"time_s": 3.0}),
    Attack("limits_disk_fill_work_uncaught", "limits", src("""
        def f():
            i = 0
            while True:
                with open("/work/@MARKER@-%d" % i, "wb") as fh:
                    fh.write(b"x" * 200_000)
                i += 1
        """), CHECK1, (RE,), {"time_s": 3.0}),
    Attack("limits_disk_fill_dev_shm", "limits", src("""
        def f():
            i = 0
            try:
                while True:
                    with open("/dev/shm/@MARKER@-%d" % i, "wb") as fh:
                        fh.write(b"x" * 200_000)
                    i += 1
            except OSError:
                return 2
        """), CALL1, (WA,), {"time_s": 3.0}),
    Attack("limits_open_file_bomb", "limits", src("""
        import os


        def f():
            fds = []
            try:
                while True:
                    fds.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                return 2 if len(fds) < 100000 else 1
        """), CALL1, (WA,)),
]

# --------------------------------------------------------------------------- (7) lax comparisons

LAX = [
    Attack("lax_bytes_for_str", "lax", "def f():\n    return b'abc'\n", call1("abc"), (WA,)),
    Attack("lax_bytearray_for_str", "lax", "def f():\n    return bytearray(b'abc')\n", call1("abc"), (WA,)),
    Attack("lax_set_for_list", "lax", "def f():\n    return {1, 2, 3}\n", call1([1, 2, 3]), (WA,)),
    Attack("lax_frozenset_for_list", "lax", "def f():\n    return frozenset([1, 2, 3])\n", call1([1, 2, 3]), (WA,)),
    Attack("lax_complex_for_pair", "lax", "def f():\n    return complex(1.0, 2.0)\n", call1([1.0, 2.0]), (WA,)),
    Attack("lax_float_shape_for_int", "lax", "def f():\n    return {'__float__': '3'}\n", call1(3), (WA,)),
    Attack("lax_true_for_one", "lax", "def f():\n    return True\n", call1(1), (WA,)),
    Attack("lax_one_for_true", "lax", "def f():\n    return 1\n", call1(True), (WA,)),
    Attack("lax_str_for_int", "lax", "def f():\n    return '1'\n", call1(1), (WA,)),
    Attack("lax_nan_for_number", "lax", "def f():\n    return float('nan')\n", call1(1.5), (WA,)),
    Attack("lax_inf_for_large_number", "lax", "def f():\n    return float('inf')\n", call1(1e308), (WA,)),
    Attack("lax_none_for_zero", "lax", "def f():\n    return None\n", call1(0), (WA,)),
    Attack("lax_list_of_chars_for_str", "lax", "def f():\n    return ['a', 'b', 'c']\n", call1("abc"), (WA,)),
    Attack("lax_nested_bytes_for_str", "lax", "def f():\n    return [b'a', b'b']\n", call1(["a", "b"]), (WA,)),
    Attack("lax_newline_for_str", "lax", "def f():\n    return 'abc\\n'\n", call1("abc"), (WA,)),
    Attack("lax_stdio_rounded_float", "lax", "print('123456900.0')\n", stdio1("123456789\n"), (WA,)),
    Attack("lax_stdio_inf_for_number", "lax", "print('inf')\n", stdio1("123456789\n"), (WA,)),
    Attack("lax_stdio_nan_for_number", "lax", "print('nan')\n", stdio1("1.5\n"), (WA,)),
]

# --------------------------------------------------------------------------- (8) size

# if any of these ran, it would take 4 s (the test asserts it answered at once)
SLOW_IF_RUN = "import time\ntime.sleep(4)\n\ndef f():\n    return 1\n"
SIZE = [
    Attack("size_program_over_1mib", "size", SLOW_IF_RUN + "#" * (MAX_PROGRAM - len(SLOW_IF_RUN) - 1) + "\n#",
           CALL1, (), http=413),
    Attack("size_program_over_1mib_in_bytes_not_chars", "size", SLOW_IF_RUN + "# " + "\u00e9" * 600_000 + "\n",
           CALL1, (), http=413),
    Attack("size_program_4mb", "size", SLOW_IF_RUN + "x = 1\n" * 700_000, CHECK1, (), http=413),
]

# --------------------------------------------------------------------------- (9) the classics

CHAMELEON = """
class A:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __bool__(self):
        return True

    def __hash__(self):
        return 0

    def __lt__(self, other):
        return True

    __le__ = __gt__ = __ge__ = __lt__
"""

CLASSIC = [
    Attack("classic_reads_etc_passwd", "classic", src("""
        def f():
            try:
                return 1 if open("/etc/passwd").read() else 2
            except OSError:
                return 2
        """), CALL1, (WA,)),
    Attack("classic_reads_root_and_service_tree", "classic", src("""
        import os


        def f():
            for path in ("/root", "/work/main", "/home", "/etc", "/proc/1/root/work/main", "/proc/1/cwd",
                         "/proc/%d/root/etc" % os.getppid(), "/proc/%d/cwd" % os.getppid()):
                try:
                    if os.listdir(path):
                        return 1
                except OSError:
                    pass
            return 2
        """), CALL1, (WA,)),
    Attack("classic_imports_service_code", "classic", src("""
        def f():
            try:
                import services.judge.settings  # noqa: F401
                return 1
            except ImportError:
                return 2
        """), CALL1, (WA,)),
    Attack("classic_connects_host_services", "classic", src("""
        import socket


        def f():
            for port in (22, 80, 5432, 6379, 8000, 8001, 8002, 8003, 8004):
                for host in ("127.0.0.1", "10.0.2.2", "172.17.0.1", "169.254.169.254"):
                    try:
                        socket.create_connection((host, port), timeout=0.05).close()
                        return 1
                    except OSError:
                        pass
            return 2
        """), CALL1, (WA,), {"time_s": 3.0}),
    Attack("classic_dns_and_udp", "classic", src("""
        import socket


        def f():
            try:
                socket.getaddrinfo("example.com", 80)
                return 1
            except OSError:
                pass
            try:
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53))
                return 1
            except OSError:
                return 2
        """), CALL1, (WA,)),
    Attack("classic_reads_service_secret", "classic", src("""
        import os


        def f():
            blobs = [repr(dict(os.environ)).encode()]
            for pid in os.listdir("/proc"):
                for part in ("environ", "cmdline"):
                    try:
                        blobs.append(open("/proc/%s/%s" % (pid, part), "rb").read())
                    except OSError:
                        pass
            return 1 if any(b"@SECRET@" in b or b"BTP_JUDGE" in b for b in blobs) else 2
        """), CALL1, (WA,)),
    Attack("classic_systemexit_in_candidate_check", "classic", raises("SystemExit(0)"), CHECK2, (RE, RE)),
    Attack("classic_systemexit_in_candidate_call", "classic", raises("SystemExit(0)"), CALL2, (RE, RE)),
    Attack("classic_os_exit_in_candidate_check", "classic", "import os\n\ndef f():\n    os._exit(0)\n", CHECK2, (RE, RE)),
    Attack("classic_os_exit_in_candidate_call", "classic", "import os\n\ndef f():\n    os._exit(0)\n", CALL2, (RE, RE)),
    Attack("classic_sys_exit_at_import", "classic", "import sys\nsys.exit(0)\n\ndef f():\n    return 1\n", CHECK2, (RE, RE)),
    Attack("classic_os_exit_at_import", "classic", "import os\nos._exit(0)\n\ndef f():\n    return 1\n", CALL2, (RE, RE)),
    Attack("classic_sys_exit_stdio_before_output", "classic", "import sys\nsys.exit(0)\nprint(1)\n", STDIO1, (WA,)),
    Attack("classic_kills_itself", "classic", "import os, signal\n\ndef f():\n    os.kill(0, signal.SIGKILL)\n", CALL1, (RE,)),
    Attack("classic_patches_isinstance_and_assertionerror", "classic", src("""
        import builtins
        builtins.isinstance = lambda *a: True
        builtins.AssertionError = KeyError
        builtins.abs = lambda x: 0


        def f():
            return 7
        """), check_tests("isinstance(candidate(), str)", "abs(candidate() - 1) < 1e-9"), (WA, WA)),
    Attack("classic_patches_import", "classic", src("""
        import builtins, types
        fake = types.ModuleType("math")
        fake.isclose = lambda *a, **k: True
        real = builtins.__import__
        builtins.__import__ = lambda name, *a, **k: fake if name == "math" else real(name, *a, **k)


        def f():
            return 7.0
        """), {"kind": "check", "entry_point": "f",
               "code": "import math\n\n\ndef check(candidate):\n    assert math.isclose(candidate(), 0.5)\n"}, (WA,)),
    Attack("classic_patches_all_len_sorted", "classic", src("""
        import builtins
        builtins.all = builtins.any = lambda *a: True
        builtins.len = lambda *a: 3
        builtins.sorted = lambda *a, **k: [1, 2, 3]


        def f(x):
            return [9]
        """), check_tests("all(v == 1 for v in candidate(1))", "len(candidate(2)) == 3", "sorted(candidate(3)) == [1, 2, 3]"),
           (WA, WA, WA)),
    Attack("classic_patches_math_module", "classic", src("""
        import math
        math.isclose = lambda *a, **k: True
        math.fabs = lambda x: 0.0


        def f():
            return 7.0
        """), {"kind": "check", "entry_point": "f",
               "code": "import math\n\n\ndef check(candidate):\n    assert math.isclose(candidate(), 0.5)\n"
               "    assert math.fabs(candidate() - 0.5) < 1e-9\n"}, (WA, WA)),
    Attack("classic_eq_override_check", "classic", src(CHAMELEON, """
        def f(*args):
            return A()
        """), check_tests("candidate(1) == [1, 2]", "not (candidate(2) != 5)", "candidate(4) <= 0"),
           # the object is not a value: `==`/`!=` see it differ, an ordering raises in the check (runtime_error)
           (WA, WA, RE)),
    Attack("classic_eq_override_call", "classic", src(CHAMELEON, """
        def f():
            return A()
        """), CALL1, (WA,)),
    Attack("classic_eq_override_inside_list_call", "classic", src(CHAMELEON, """
        def f():
            return [A(), A()]
        """), call1([1, 2]), (WA,)),
    Attack("classic_int_subclass_eq", "classic", src("""
        class I(int):
            def __eq__(self, other):
                return True

            __hash__ = int.__hash__


        def f():
            return I(7)
        """), check_tests("candidate() == 1"), (WA,)),
    Attack("classic_str_subclass_eq", "classic", src("""
        class S(str):
            def __eq__(self, other):
                return True

            def __ne__(self, other):
                return False

            __hash__ = str.__hash__


        def f():
            return S("zzz")
        """), call1("abc"), (WA,)),
    Attack("classic_list_subclass_eq", "classic", src("""
        class L(list):
            def __eq__(self, other):
                return True


        def f():
            return L([9, 9])
        """), check_tests("candidate() == [1, 2]"), (WA,)),
    Attack("classic_float_subclass_arithmetic", "classic", src("""
        class F(float):
            def __sub__(self, other):
                return F(0.0)

            __rsub__ = __sub__

            def __abs__(self):
                return 0.0

            def __lt__(self, other):
                return True


        def f():
            return F(7.0)
        """), check_tests("abs(candidate() - 0.5) < 1e-6"), (WA,)),
    Attack("classic_ptrace_parent_and_others", "classic", src(SYS, """
        def f():
            me = os.getpid()
            for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
                if pid != me and sc(101, 16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                    return 1
            return 2
        """), CALL1, (WA,)),
    Attack("classic_ptrace_own_child", "classic", src(SYS, """
        import time


        def f():
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(5)
                finally:
                    os._exit(0)
            r = sc(101, 16, pid, 0, 0)  # PTRACE_ATTACH
            os.kill(pid, 9)
            while True:
                _, st = os.waitpid(pid, 0)
                if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                    break
            return 1 if r == 0 else 2
        """), CALL1, (WA,)),
    Attack("classic_process_vm_readv_parent", "classic", src(SYS, """
        class IOVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


        def f():
            dst = ctypes.create_string_buffer(64)
            local = IOVec(ctypes.addressof(dst), 64)
            for pid in (os.getppid(), 1):
                try:
                    with open("/proc/%d/maps" % pid) as fh:
                        addr = int(fh.read().split("-", 1)[0], 16)
                except (OSError, ValueError):
                    addr = 0x400000
                remote = IOVec(addr, 64)
                if sc(310, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
                    return 1
            return 2
        """), CALL1, (WA,)),
    Attack("classic_process_vm_readv_writev_self", "classic", src(SYS, """
        class IOVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


        def f():
            src_buf, dst = ctypes.create_string_buffer(b"abc", 8), ctypes.create_string_buffer(8)
            a, b = IOVec(ctypes.addressof(dst), 3), IOVec(ctypes.addressof(src_buf), 3)
            r = sc(310, os.getpid(), ctypes.byref(a), 1, ctypes.byref(b), 1, 0)
            w = sc(311, os.getpid(), ctypes.byref(b), 1, ctypes.byref(a), 1, 0)
            return 1 if r == 3 or w == 3 else 2
        """), CALL1, (WA,)),
    Attack("classic_kill_minus_one_call", "classic",
           "import os, signal\n\ndef f():\n    os.kill(-1, signal.SIGKILL)\n    return 2\n", CALL1, (WA,)),
    Attack("classic_kill_minus_one_check", "classic",
           "import os, signal\n\ndef f():\n    os.kill(-1, signal.SIGKILL)\n    return 2\n", CHECK2, (WA, WA)),
    Attack("classic_kills_init_and_parent", "classic", src("""
        import os, signal


        def f():
            killed = 0
            for pid in (1, os.getppid()):
                for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
                    try:
                        os.kill(pid, sig)
                        killed += 1
                    except OSError:
                        pass
            return 1 if killed else 2
        """), CALL1, (WA,)),
    Attack("classic_raises_own_limits", "classic", src("""
        import resource


        def f():
            raised = 0
            for name in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_DATA"):
                res = getattr(resource, name)
                soft, hard = resource.getrlimit(res)
                if hard == resource.RLIM_INFINITY:
                    continue
                try:
                    resource.setrlimit(res, (hard * 2 + 1, hard * 2 + 1))
                    raised += 1
                except (ValueError, OSError):
                    pass
            return 1 if raised else 2
        """), CALL1, (WA,)),
    Attack("classic_prctl_calls", "classic", src(SYS, """
        def f():
            ok = 0
            ok += libc.prctl(35, 1, 0, 0, 0) == 0  # PR_SET_MM
            ok += libc.prctl(24, 21, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SYS_ADMIN: harmless, needs CAP_SETPCAP
            ok += libc.prctl(47, 2, 21, 0, 0) == 0  # PR_CAP_AMBIENT raise CAP_SYS_ADMIN
            libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG off
            return 1 if ok else 2
        """), CALL1, (WA,)),
    Attack("classic_becomes_root", "classic", src("""
        import os


        def f():
            for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0]),
                         lambda: os.setresuid(0, 0, 0), lambda: os.seteuid(0)):
                try:
                    call()
                    return 1
                except OSError:
                    pass
            return 2
        """), CALL1, (WA,)),
    Attack("classic_chroot", "classic", src("""
        import os


        def f():
            try:
                os.chroot("/tmp")
                return 1
            except OSError:
                return 2
        """), CALL1, (WA,)),
    Attack("classic_writes_proc_sys_and_sysrq", "classic", src("""
        def f():
            wrote = 0
            for path, text in (("/proc/sys/kernel/hostname", "@MARKER@"), ("/proc/sys/vm/drop_caches", "1"),
                               ("/proc/sysrq-trigger", "h"), ("/proc/sys/kernel/core_pattern", "|/bin/true"),
                               ("/proc/self/oom_score_adj", "-1000"), ("/sys/kernel/mm/transparent_hugepage/enabled", "never")):
                try:
                    with open(path, "w") as fh:
                        fh.write(text)
                    wrote += 1
                except OSError:
                    pass
            return 1 if wrote else 2
        """), CALL1, (WA,)),
    Attack("classic_personality", "classic", src(SYS, """
        def f():
            libc.personality(0x0040000)  # ADDR_NO_RANDOMIZE
            libc.personality(0x0400000)  # READ_IMPLIES_EXEC
            return 2
        """), CALL1, (WA,)),
    Attack("classic_io_uring_setup", "classic", src(SYS, """
        def f():
            params = ctypes.create_string_buffer(120)
            fd = sc(425, 8, params)
            if fd >= 0:
                os.close(fd)
                return 1
            return 2
        """), CALL1, (WA,)),
    Attack("classic_bpf", "classic", src(SYS, """
        def f():
            attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)  # BPF_MAP_CREATE: array, key 4, value 4, 1 entry
            fd = sc(321, 0, attr, 128)
            return 1 if fd >= 0 else 2
        """), CALL1, (WA,)),
    Attack("classic_perf_event_open", "classic", src(SYS, """
        import struct


        def f():
            # perf_event_attr (PERF_ATTR_SIZE_VER0): software cpu-clock, disabled, user space only, this process
            attr = ctypes.create_string_buffer(struct.pack("=IIQQQQQ", 1, 64, 0, 0, 0, 0, 1 | 32 | 64) + bytes(8), 128)
            fd = sc(298, attr, 0, -1, -1, 0)
            if fd >= 0:
                os.close(fd)
                return 1
            return 2
        """), CALL1, (WA,)),
    Attack("classic_userfaultfd", "classic", src(SYS, """
        def f():
            for flags in (0o2000000 | 1, 0o2000000):  # UFFD_USER_MODE_ONLY, then plain
                fd = sc(323, flags)
                if fd >= 0:
                    os.close(fd)
                    return 1
            return 2
        """), CALL1, (WA,)),
    Attack("classic_mount", "classic", src(SYS, """
        def f():
            r = libc.mount(b"none", b"/work", b"tmpfs", 0, b"size=1g")
            r2 = libc.mount(b"proc", b"/tmp", b"proc", 0, None)
            return 1 if r == 0 or r2 == 0 else 2
        """), CALL1, (WA,)),
    Attack("classic_open_by_handle_at", "classic", src(SYS, """
        def f():
            handle = (ctypes.c_uint32 * 34)(128)  # struct file_handle, 128 bytes of handle
            mount_id = ctypes.c_int()
            if sc(303, -100, b"/usr", handle, ctypes.byref(mount_id), 0) != 0:  # name_to_handle_at
                return 2
            fd = os.open("/usr", os.O_RDONLY)
            r = sc(304, fd, handle, 0)  # open_by_handle_at: CAP_DAC_READ_SEARCH
            return 1 if r >= 0 else 2
        """), CALL1, (WA,)),
    Attack("classic_reboot_hostname_clock", "classic", src(SYS, """
        import time


        def f():
            done = 0
            done += sc(169, 0xFEE1DEAD, 672274793, 0x89ABCDEF, 0) == 0  # reboot(CAD_ON): harmless if it worked
            done += libc.sethostname(b"@MARKER@", len(b"@MARKER@")) == 0
            try:
                time.clock_settime(time.CLOCK_REALTIME, time.time())  # the current time: harmless if it worked
                done += 1
            except OSError:
                pass
            return 1 if done else 2
        """), CALL1, (WA,)),
    Attack("classic_leaves_environment", "classic", src("""
        import os
        os.environ["@MARKER@"] = "@MARKER@"
        os.putenv("@MARKER@_PUT", "@MARKER@")


        def f():
            os.environ["BTP_@MARKER@"] = "@MARKER@"
            return 2
        """), CALL1, (WA,)),
    Attack("classic_chmod_work_dir", "classic", src("""
        import os


        def f():
            for d in ("/work", "/tmp", "/dev/shm", "/run/judge"):
                try:
                    os.chmod(d, 0)
                except OSError:
                    pass
            return 2
        """), CALL1, (WA,)),
    Attack("classic_symlinks_to_judge_files", "classic", src("""
        import os


        def f():
            for target in ("/run/judge", "/run/judge/out", "/run/judge/in", "/proc/1/root", "/proc/self/fd/1", "/"):
                for d in ("/work", "/tmp", "/dev/shm"):
                    try:
                        os.symlink(target, os.path.join(d, "@MARKER@-" + target.replace("/", "_")))
                    except OSError:
                        pass
            return 2
        """), CALL1, (WA,)),
    Attack("classic_deep_directory_tree", "classic", src("""
        import os


        def f():
            os.chdir("/work")
            for _ in range(3000):  # deeper than a recursive rmtree can go
                os.mkdir("@MARKER@")
                os.chdir("@MARKER@")
            return 2
        """), CALL1, (WA,), {"time_s": 3.0}),
    Attack("classic_closes_every_descriptor", "classic", "import os\n\ndef f():\n    os.closerange(0, 65536)\n    return 1\n",
           CALL1, (RE,)),
    Attack("classic_segfault", "classic", "import ctypes\n\ndef f():\n    ctypes.string_at(0)\n    return 1\n", CALL1, (RE,)),
    Attack("classic_c_stack_overflow", "classic", src("""
        import sys
        sys.setrecursionlimit(10 ** 7)


        def g(n):
            return list(map(g, [n + 1]))  # through C: every level takes C stack


        def f():
            return g(0)
        """), CHECK1, (RE,)),
]

CORPUS: list[Attack] = [*FORGE, *VACUOUS, *TIME, *OUTPUT, *CHANNEL, *LIMITS, *LAX, *SIZE, *CLASSIC]

# --------------------------------------------------------------------------------------- the witness

WITNESS = r'''
import array
import ctypes
import os
import socket

SKIP = ("/proc", "/sys", "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin")


def ancestors():
    out, pid = set(), os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            with open("/proc/%d/stat" % pid) as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def witness(marker, secret):
    found = []
    uid, mine, mark = os.getuid(), ancestors(), marker.encode()
    # processes: anything of the programs' uid but us and our ancestors; anything naming the marker
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            with open("/proc/%s/status" % name) as fh:
                info = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        except OSError:
            continue
        owner = int(info.get("Uid", "-1").split()[0])
        blob = b""
        for part in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (name, part), "rb") as fh:
                    blob += fh.read()
            except OSError:
                pass
        if owner == uid or mark in blob or secret.encode() in blob:
            found.append("process %s uid %d %s %s" % (name, owner, info.get("Name", "").strip(), info.get("State", "").strip()[:1]))
    # files: anything in a directory we may write, anything we own, anything named after the marker
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]
        writable = os.access(root, os.W_OK)
        for entry in dirs + files:
            path = os.path.join(root, entry)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if path != "/work" and (writable or st.st_uid == uid or marker in entry):
                found.append("file %r" % path)
    for d in ("/work", "/tmp", "/dev/shm"):
        probe = os.path.join(d, ".witness-probe")
        try:
            with open(probe, "wb") as fh:
                fh.write(b"w" * 65536)
            os.unlink(probe)
        except OSError as e:
            found.append("cannot use %s: %s" % (d, e))
    # environment and host name
    for k, v in os.environ.items():
        if marker in k or marker in v or secret in v or k.startswith("BTP"):
            found.append("environment %s" % k)
    if marker in socket.gethostname():
        found.append("hostname %s" % socket.gethostname())
    # System V IPC
    for kind in ("shm", "sem", "msg"):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                rows = fh.read().strip().splitlines()[1:]
        except OSError:
            continue
        if rows:
            found.append("sysv %s x%d" % (kind, len(rows)))
    # sockets: named and abstract unix sockets, any inet socket
    try:
        with open("/proc/net/unix") as fh:
            for line in fh.read().splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 8:
                    found.append("unix socket %s" % cols[7])
    except OSError:
        pass
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            with open("/proc/net/" + proto) as fh:
                rows = fh.read().strip().splitlines()[1:]
        except OSError:
            continue
        if rows:
            found.append("%s sockets x%d" % (proto, len(rows)))
    # POSIX message queues
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    q = libc.mq_open(b"/" + mark, os.O_RDONLY, 0, None)
    if q >= 0:
        found.append("message queue /%s" % marker)
        libc.mq_close(q)
    if os.path.isdir("/dev/mqueue"):
        found += ["message queue %s" % n for n in os.listdir("/dev/mqueue")]
    # kernel keys: any key but the kernel's own per-uid keyrings; the marker's, by search
    try:
        with open("/proc/keys") as fh:
            for line in fh.read().splitlines():
                cols = line.split(None, 8)
                if len(cols) == 9 and (cols[7] != "keyring" or marker in cols[8]):
                    found.append("key %s" % " ".join(cols[7:]))
    except OSError:
        pass
    for ktype in (b"user", b"keyring", b"logon"):
        for desc in (mark, mark + b"-ring", mark + b"-in-ring"):
            serial = libc.syscall(ctypes.c_long(249), ktype, desc, None, ctypes.c_long(0))
            if serial >= 0:
                found.append("key %s %s found by request_key" % (ktype, desc))
    for ring in (-3, -4, -5):
        buf = ctypes.create_string_buffer(4096)
        n = libc.syscall(ctypes.c_long(250), ctypes.c_long(11), ctypes.c_long(ring), buf, ctypes.c_long(4096))
        for serial in array.array("i", buf.raw[: max(0, min(n, 4096)) // 4 * 4]):
            d = ctypes.create_string_buffer(512)
            if libc.syscall(ctypes.c_long(250), ctypes.c_long(6), ctypes.c_long(serial), d, ctypes.c_long(512)) >= 0:
                text = d.value.decode("utf-8", "replace")
                if marker in text or not text.startswith("keyring;"):
                    found.append("key in keyring %d: %s" % (ring, text))
    if found:
        raise ValueError("LEFTOVERS: " + "; ".join(found))
    return "clean"
'''

JANITOR = r'''
import ctypes
import os
import shutil
import signal


def janitor(marker):
    uid, me = os.getuid(), os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    for name in ("/" + marker, "/" + marker + "-sem"):
        libc.mq_unlink(name.encode())
    try:
        with open("/proc/keys") as fh:
            for line in fh.read().splitlines():
                cols = line.split(None, 8)
                if len(cols) == 9 and (cols[7] != "keyring" or marker in cols[8]):
                    serial = int(cols[0], 16)
                    for ring in (-3, -4, -5):
                        libc.syscall(ctypes.c_long(250), ctypes.c_long(9), ctypes.c_long(serial), ctypes.c_long(ring))
                    libc.syscall(ctypes.c_long(250), ctypes.c_long(21), ctypes.c_long(serial))
    except OSError:
        pass
    for kind, rm in (("shm", libc.shmctl), ("sem", libc.semctl), ("msg", libc.msgctl)):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                for row in fh.read().strip().splitlines()[1:]:
                    ident = int(row.split()[1])
                    if kind == "sem":
                        rm(ident, 0, 0)
                    else:
                        rm(ident, 0, None)
        except OSError:
            pass
    for d in ("/work", "/tmp", "/dev/shm"):
        try:
            os.chmod(d, 0o1777 if d != "/work" else 0o755)
        except OSError:
            pass
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                try:
                    os.chmod(os.path.join(root, x), 0o700)
                except OSError:
                    pass
        for name in os.listdir(d):
            path = os.path.join(d, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass
    return "done"
'''

# ----------------------------------------------------------------------------------------- the box

CORRECT_ITEM = {"program": "def f():\n    return 1\n", "tests": CALL1}


class Box:
    """One judge app with one container, restarted after an attack that left something behind."""

    def __init__(self) -> None:
        self.settings = make_settings(workers=1, uid_base=UID_BASE)
        self._cm: TestClient | None = None
        self.client: TestClient = self._start()

    def _start(self) -> TestClient:
        self._cm = TestClient(create_app(self.settings), raise_server_exceptions=False)
        return self._cm.__enter__()

    def restart(self) -> None:
        self.close()
        self.client = self._start()

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


def post(client: TestClient, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = client.post(path, json=body)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def run_witness(client: TestClient) -> str | None:
    """None when the container is clean, else what the witness found (or why it could not tell)."""
    tests = {"kind": "call", "fn_name": "witness", "cases": [{"args": [MARKER, SECRET], "expected": "clean"}]}
    code, res = post(client, "/v1/judge", {"program": WITNESS, "tests": tests, "limits": {"time_s": 5.0}})
    if code != 200:
        return f"witness got HTTP {code}: {str(res)[:300]}"
    if res["verdict"] != "passed":
        return "; ".join(f"{c['status']}: {c['detail']}" for c in res["cases"])
    return None


def run_janitor(client: TestClient) -> None:
    tests = {"kind": "call", "fn_name": "janitor", "cases": [{"args": [MARKER], "expected": "done"}]}
    with contextlib.suppress(Exception):
        post(client, "/v1/judge", {"program": JANITOR, "tests": tests, "limits": {"time_s": 5.0}})


def host_traces() -> list[str]:
    """The marker on the host: its /tmp, /dev/shm and the kernel's key list."""
    out = [f"host file {p}" for d in ("/tmp", "/dev/shm") for p in Path(d).glob(f"*{MARKER}*")]
    with contextlib.suppress(OSError):
        out += [f"host key {line}" for line in Path("/proc/keys").read_text().splitlines() if MARKER in line]
    return out


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    b = Box()
    try:
        yield b
        run_janitor(b.client)
    finally:
        b.close()


def statuses_match(got: list[str], expect: tuple[str | frozenset[str], ...]) -> bool:
    return len(got) == len(expect) and all(g in e if isinstance(e, frozenset) else g == e for g, e in zip(got, expect, strict=True))


def judge_attack(client: TestClient, attack: Attack) -> list[str]:
    """Run the attack; the problems with its answer (empty: as expected)."""
    body: dict[str, Any] = {"program": attack.program, "tests": attack.tests}
    if attack.limits:
        body["limits"] = attack.limits
    problems: list[str] = []
    t0 = time.monotonic()
    if attack.http != 200:
        code, res = post(client, "/v1/judge", body)
        elapsed = time.monotonic() - t0
        if code != attack.http:
            problems.append(f"HTTP {code} (want {attack.http}): {str(res)[:300]}")
        elif not (isinstance(res, dict) and isinstance(res.get("error"), dict)
                  and res["error"].get("type") == PayloadTooLargeError.error_type and res["error"].get("message")):
            problems.append(f"not the error envelope of a 413: {str(res)[:300]}")
        if elapsed > 2.0:
            problems.append(f"took {elapsed:.1f} s: the program ran")
        return problems
    if attack.batch:
        code, res = post(client, "/v1/judge/batch", {"items": [body, CORRECT_ITEM]})
        if code != 200:
            return [f"batch HTTP {code}: {str(res)[:300]}"]
        results = res.get("results", [])
        if len(results) != 2:
            return [f"batch answered {len(results)} results: {str(res)[:300]}"]
        if results[1]["verdict"] != "passed":
            problems.append(f"the correct program next to the attack did not pass: {results[1]}")
        res = results[0]
    else:
        code, res = post(client, "/v1/judge", body)
        if code != 200:
            return [f"HTTP {code}: {str(res)[:300]}"]
    got = [c["status"] for c in res["cases"]]
    if not statuses_match(got, attack.expect):
        details = " | ".join(f"{c['status']}: {c['detail'][:160]}" for c in res["cases"][:4])
        problems.append(f"statuses {got}, want {list(attack.expect)} ({details})")
    if res["verdict"] != "failed" or res["passed"] != got.count("passed") or res["total"] != len(got):
        problems.append(f"verdict/counts inconsistent: {({k: v for k, v in res.items() if k != 'cases'})}")
    return problems


def serving_problems(client: TestClient) -> list[str]:
    try:
        assert_serving(client)
    except AssertionError as e:
        return [f"not serving: {str(e)[:300]}"]
    return []


# -------------------------------------------------------------------------------------------- tests


def test_corpus_shape() -> None:
    ids = [a.id for a in CORPUS]
    assert len(CORPUS) >= 90 and len(set(ids)) == len(ids)
    assert {a.group for a in CORPUS} == {"forge", "vacuous", "time", "output", "channel", "limits", "lax", "size", "classic"}
    for a in CORPUS:
        assert re.fullmatch(r"[a-z0-9_]+", a.id), a.id
        flat = {s for e in a.expect for s in (e if isinstance(e, frozenset) else {e})}
        assert flat <= STATUSES, a.id  # never "passed"
        assert a.why or not any(isinstance(e, frozenset) for e in a.expect), f"{a.id}: a set of statuses needs a reason"
        if a.http == 200:
            compile(a.program, a.id, "exec")  # the attack itself must be valid Python


@pytest.mark.parametrize("attack", CORPUS, ids=lambda a: a.id)
def test_attack(box: Box, attack: Attack) -> None:
    client = box.client
    problems = judge_attack(client, attack)
    found = run_witness(client)  # the very next program in the same container
    if found is not None:
        problems.append(f"the next program found: {found}")
    problems += serving_problems(client)
    problems += [f"host: {p}" for p in leftovers(client)]
    problems += host_traces()
    if found is not None:  # clean up so that this leak does not fail the attacks after it
        run_janitor(client)
        box.restart()
    assert not problems, "\n".join(problems)


def test_program_of_exactly_1mib_is_judged(box: Box) -> None:
    body = "def f():\n    return 1\n"
    program = body + "#" * (MAX_PROGRAM - len(body) - 1) + "\n"
    assert len(program.encode()) == MAX_PROGRAM
    code, res = post(box.client, "/v1/judge", {"program": program, "tests": CALL1})
    assert code == 200 and res["verdict"] == "passed", (code, str(res)[:300])


def test_batch_with_an_oversized_program_is_refused_whole(box: Box) -> None:
    """Validated before anything runs: the whole batch is a 413 and the correct item does not run either."""
    big = {"program": SLOW_IF_RUN + "#" * MAX_PROGRAM, "tests": CALL1}
    t0 = time.monotonic()
    code, res = post(box.client, "/v1/judge/batch", {"items": [CORRECT_ITEM, big]})
    assert code == 413, (code, str(res)[:300])
    assert res["error"]["type"] == PayloadTooLargeError.error_type and res["error"]["message"]
    assert time.monotonic() - t0 < 2.0
    assert run_witness(box.client) is None


def test_the_witness_sees_what_is_planted(box: Box) -> None:
    """The witness is not vacuous: planted in the same program, every kind of leftover it can be shown is
    reported (kernel keys and message queues cannot be planted where the seccomp filter refuses them)."""
    wanted = ["process ", "file '/tmp/planted'", "file '/dev/shm/planted'", "cannot use /work", "sysv shm",
              "unix socket @planted", "tcp sockets", f"environment {MARKER}"]
    plant = src(WITNESS, """
        import os, socket, sys, time


        def f(wanted):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            for d in ("/work", "/tmp", "/dev/shm"):
                open(d + "/planted", "w").close()
            ctypes.CDLL(None).shmget(0x7B7C0009, 4096, 0o1666)
            s = socket.socket(socket.AF_UNIX)
            s.bind(b"\\0planted")
            s.listen()
            t = socket.socket()
            t.bind(("127.0.0.1", 0))
            t.listen()
            os.environ["@MARKER@"] = "1"
            os.chmod("/work", 0)
            try:
                witness("@MARKER@", "@SECRET@")
                found = "nothing"
            except ValueError as e:
                found = str(e)
            finally:
                os.chmod("/work", 0o755)
            return [w for w in wanted if w in found] or found
        """)
    tests = {"kind": "call", "fn_name": "f", "cases": [{"args": [wanted], "expected": wanted}]}
    code, res = post(box.client, "/v1/judge", {"program": plant, "tests": tests, "limits": {"time_s": 5.0}})
    assert code == 200 and res["verdict"] == "passed", res
    assert run_witness(box.client) is None
