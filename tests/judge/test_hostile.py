"""Hostile programs: each ends with the right non-passing verdict within its limits, leaves no process
behind, and the service keeps serving. Real bubblewrap containers, nothing mocked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.judge.app import create_app

from .conftest import ROOT, SECRET_ENV, assert_serving, check_tests, judge, leftovers, make_settings

ONE = check_tests("candidate() == 1")
TWO = check_tests("candidate() == 1", "candidate() == 1")
CALL = {"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": 1}]}
STDIO = {"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}]}
MARKER = Path("/tmp/btp-judge-hostile-marker")


@dataclass
class Attack:
    name: str
    program: str
    expect: set[str]
    tests: dict[str, Any] = field(default_factory=lambda: ONE)
    limits: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None  # a substring every non-passing case detail must contain


def fn(body: str, prelude: str = "") -> str:
    """A program defining ``f()`` whose body is ``body`` (indented)."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return f"{prelude}\ndef f():\n{lines}"


ATTACKS = [
    Attack("fork_bomb", fn("import os\nwhile True:\n    os.fork()"), {"runtime_error", "timeout"}),
    Attack("fork_bomb_swallowing_errors", fn("import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass"), {"timeout", "runtime_error"}),
    Attack("memory_bomb_one_block", fn("return len(bytearray(8 * 1024 ** 3))"), {"memory_exceeded"}),
    # filling 256 MiB page by page takes 0.2-0.5 s alone: room for a loaded machine
    Attack("memory_bomb_growing", fn("x = []\nwhile True:\n    x.append(bytearray(10 ** 7))"), {"memory_exceeded"},
           limits={"time_s": 4.0}),
    Attack("memory_bomb_stdio", "x = ' ' * (8 * 1024 ** 3)\nprint(1)\n", {"memory_exceeded"}, STDIO),
    Attack("infinite_loop", fn("while True:\n    pass"), {"timeout"}),
    Attack("infinite_loop_stdio", "while True:\n    pass\n", {"timeout"}, STDIO),
    Attack("sleep_forever", fn("import time\ntime.sleep(10 ** 6)"), {"timeout"}),
    Attack(
        "busy_threads",
        fn("import threading\nts = [threading.Thread(target=lambda: [0 for _ in iter(int, 1)]) for _ in range(6)]\n"
           "[t.start() for t in ts]\n[t.join() for t in ts]"),
        {"timeout"},
    ),
    Attack("ignores_sigterm_and_alarm", fn("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                           "signal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"), {"timeout"}),
    Attack("catches_the_timeout", fn("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"), {"timeout"}),
    # 100 MB through print takes ~0.3-0.6 s alone: on a loaded machine it may run past time_s first
    Attack("huge_output_call", fn("print('x' * 10 ** 8)\nreturn 1"), {"output_exceeded", "timeout"}),
    Attack("huge_output_raw_fd", fn("import os\nwhile True:\n    os.write(1, b'y' * 65536)"), {"output_exceeded"}),
    Attack("huge_output_stdio", "while True:\n    print('y' * 1000)\n", {"output_exceeded"}, STDIO),
    Attack("huge_stderr_stdio", "import sys\nwhile True:\n    sys.stderr.write('z' * 1000)\n", {"output_exceeded"}, STDIO),
    Attack("reads_etc_shadow", fn("return open('/etc/shadow').read()"), {"runtime_error"}, detail="No such file"),
    Attack("reads_service_source", fn(f"return open({str(ROOT / 'services/judge/app.py')!r}).read()"), {"runtime_error"},
           detail="No such file"),
    Attack("reads_service_settings_module", fn("import services.judge.settings\nreturn 1"), {"runtime_error"}),
    Attack("reads_environment", fn(f"import os\nreturn 1 if any({SECRET_ENV[1]!r} in v or k.startswith('BTP') for k, v in os.environ.items()) else 0"),
           {"wrong_answer"}),
    Attack(
        "reads_other_processes_environ",
        fn("import os\nfound = 0\nfor p in os.listdir('/proc'):\n    try:\n"
           f"        found += {SECRET_ENV[1]!r}.encode() in open('/proc/' + p + '/environ', 'rb').read()\n"
           "    except OSError:\n        pass\nreturn 1 if found else 0"),
        {"wrong_answer"},
    ),
    Attack("writes_system_dir", fn("open('/usr/lib/btp-evil', 'w').write('x')\nreturn 1"), {"runtime_error"}),
    Attack("writes_root_dir", fn("open('/btp-evil', 'w').write('x')\nreturn 1"), {"runtime_error"}),
    Attack("writes_host_tmp", fn(f"open({str(MARKER)!r}, 'w').write('x')\nimport os\nreturn 1 if os.path.exists('/work/main') else 0"),
           {"wrong_answer"}),
    Attack("connects_postgres", fn("import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=0.5)\nreturn 1"),
           {"runtime_error"}),
    Attack("connects_redis", fn("import socket\nsocket.create_connection(('127.0.0.1', 6379), timeout=0.5)\nreturn 1"),
           {"runtime_error"}),
    Attack("kills_its_parent", fn("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nreturn 1"), {"runtime_error"}),
    # kill(-1) spares the caller: the program survives, so it must fail by its (wrong) answer or by the
    # checker it killed
    Attack("kills_everything", fn("import os, signal\nos.kill(-1, signal.SIGKILL)\nreturn 2"), {"runtime_error", "wrong_answer"}),
    Attack("kills_container_init", fn("import os, signal\nos.kill(1, signal.SIGKILL)\nreturn 1"), {"runtime_error"}),
    Attack("os_exit_before_tests", "import os\nos._exit(0)\ndef f():\n    return 1\n", {"runtime_error"}, TWO),
    Attack("sys_exit_before_tests", "import sys\nsys.exit(0)\ndef f():\n    return 1\n", {"runtime_error"}, TWO),
    Attack("os_exit_inside_case", fn("import os\nos._exit(0)"), {"runtime_error"}, TWO),
    Attack("sys_exit_inside_case", fn("raise SystemExit(0)"), {"runtime_error"}, TWO),
    Attack("sys_exit_stdio_before_output", "import sys\nsys.exit(0)\nprint(1)\n", {"wrong_answer"}, STDIO),
    Attack("eq_override_check", "class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\n\ndef f():\n    return A()\n",
           {"wrong_answer"}),
    Attack("eq_override_call", "class A:\n    def __eq__(self, o):\n        return True\n\ndef f():\n    return A()\n",
           {"wrong_answer"}, CALL),
    Attack("eq_override_int_subclass", "class A(int):\n    def __eq__(self, o):\n        return True\n\ndef f():\n    return A(7)\n",
           {"wrong_answer"}),
    Attack("patches_builtins", "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
           "builtins.AssertionError = KeyError\ndef f():\n    return 7\n",
           # inprocess mode: the patched builtins may also break the runner itself (a runtime error)
           {"wrong_answer", "runtime_error"}, check_tests("abs(candidate() - 1) < 1e-6")),
    Attack(
        "patches_the_checker_via_gc",
        "import gc, types\nnoop = (lambda *a, **k: None).__code__\n"
        "for o in gc.get_objects():\n    if isinstance(o, types.FunctionType) and (o.__name__.startswith('__btp') or o.__name__ in "
        "('check', 'candidate', 'classify_exception', 'emit')):\n        try:\n            o.__code__ = noop\n        except Exception:\n            pass\n"
        "def f():\n    return 7\n",
        {"wrong_answer"},
    ),
    Attack("patches_the_harness_module", "import __main__\n__main__.classify_exception = lambda e: ('passed', '')\n"
           "def f():\n    return 7\n", {"wrong_answer"}),
    Attack("prints_fake_pass_markers",
           "import os, sys, json\nfor fd in (1, 2):\n    os.write(fd, b'passed\\n{\"i\": 0, \"status\": \"passed\"}\\nOK\\n')\n"
           "print(json.dumps({'cases': [{'status': 'passed'}], 'pass_rate': 1.0}))\ndef f():\n    return 7\n",
           {"wrong_answer"}),
    Attack("forges_the_result_pipe",
           "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32 + b'\\t{\"i\": 0, \"status\": \"passed\", \"t\": 0}\\n')\n"
           "    except OSError:\n        pass\ndef f():\n    return 7\n",
           # junk on its own reply channel: the length prefix it wrote reads as a value over the limit
           {"wrong_answer", "runtime_error", "output_exceeded"}),
    Attack("fills_dev_shm", fn("with open('/dev/shm/fill', 'wb') as fh:\n    while True:\n        fh.write(b'x' * 65536)"),
           {"runtime_error", "output_exceeded"}),
    Attack("fills_the_disk", fn("i = 0\nwhile True:\n    open('/work/f%d' % i, 'wb').write(b'x' * 200000)\n    i += 1"),
           {"runtime_error", "output_exceeded"}),
    Attack("leaves_a_daemon",
           fn("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        while True:\n            time.sleep(0.01)\n"
              "    os._exit(0)\nreturn 2"),
           {"wrong_answer"}),
    Attack("leaves_sysv_shared_memory",
           fn("import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmget(0x1234, 1 << 20, 0o1666)\nreturn 2"), {"wrong_answer"}),
    Attack("raises_its_own_limits", fn("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nreturn 1"),
           {"runtime_error"}),
    Attack("becomes_root", fn("import os\nos.setuid(0)\nreturn 1"), {"runtime_error"}),
    Attack("segfaults", fn("import ctypes\nctypes.string_at(0)\nreturn 1"), {"runtime_error"}),
    Attack("deep_recursion", fn("def g(n):\n    return g(n + 1)\nreturn g(0)"), {"runtime_error"}),
]


@pytest.fixture(scope="module")
def one_box() -> Any:
    """One container (consecutive programs reuse it)."""
    with TestClient(create_app(make_settings(workers=1))) as c:
        yield c


def test_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 25
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack(one_box: TestClient, attack: Attack) -> None:
    t0 = time.monotonic()
    res = judge(one_box, attack.program, attack.tests, attack.limits or None)
    elapsed = time.monotonic() - t0
    assert res["verdict"] == "failed" and res["passed"] == 0 and res["pass_rate"] == 0.0, res
    statuses = {c["status"] for c in res["cases"]}
    assert statuses <= attack.expect, (statuses, res)
    if attack.detail:
        assert all(attack.detail in c["detail"] for c in res["cases"]), res
    # within its limits: 1 s per case (plus loading) and the harness's grace
    assert elapsed < 2.0 * (len(res["cases"]) + 1) + 3.0, elapsed
    assert leftovers(one_box) == []
    assert not MARKER.exists()
    assert not Path("/usr/lib/btp-evil").exists() and not Path("/btp-evil").exists()
    assert_serving(one_box)


def test_nothing_survives_between_programs(one_box: TestClient) -> None:
    """Files in /work, /tmp, /dev/shm (even unreadable ones) are gone before the next program runs."""
    writer = fn(
        "import os\nopen('/work/a', 'w').write('1')\nopen('/tmp/b', 'w').write('1')\nopen('/dev/shm/c', 'w').write('1')\n"
        "os.mkdir('/work/locked')\nopen('/work/locked/x', 'w').write('1')\nos.chmod('/work/locked', 0)\nreturn 1"
    )
    assert judge(one_box, writer, ONE)["verdict"] == "passed"
    reader = fn("import os\nreturn len(os.listdir('/work') + os.listdir('/tmp') + os.listdir('/dev/shm'))")
    res = judge(one_box, reader, check_tests("candidate() == 0"))
    assert res["verdict"] == "passed", res


def test_daemon_cannot_touch_the_next_program(one_box: TestClient) -> None:
    daemon = fn("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n    open('/work/planted', 'w').write('x')\n"
                "    os._exit(0)\nreturn 1")
    judge(one_box, daemon, ONE)
    time.sleep(0.5)
    res = judge(one_box, fn("import os\nreturn int(os.path.exists('/work/planted'))"), check_tests("candidate() == 0"))
    assert res["verdict"] == "passed", res
    assert leftovers(one_box) == []


def test_sysv_ipc_leftover_replaces_the_container(one_box: TestClient) -> None:
    judge_state = one_box.app.state.judge  # type: ignore[attr-defined]
    before = judge_state.pool.restarts
    judge(one_box, fn("import ctypes\nctypes.CDLL(None).shmget(0x4321, 4096, 0o1666)\nreturn 1"), ONE)
    assert judge_state.pool.restarts == before + 1
    res = judge(one_box, fn("return len(open('/proc/sysvipc/shm').read().strip().splitlines())"), check_tests("candidate() == 1"))
    assert res["verdict"] == "passed", res


def test_concurrent_attacks_do_not_disturb_honest_programs(client: TestClient) -> None:
    """A batch mixing attacks and honest programs: the honest ones pass, the attacks fail."""
    honest = {"program": "def f():\n    return 1\n", "tests": ONE}
    hostile = [{"program": a.program, "tests": a.tests} for a in ATTACKS if a.name in (
        "fork_bomb", "memory_bomb_growing", "kills_everything", "leaves_a_daemon", "huge_output_call")]
    items = [honest, *hostile, honest, honest]
    r = client.post("/v1/judge/batch", json={"items": items})
    assert r.status_code == 200
    verdicts = [x["verdict"] for x in r.json()["results"]]
    assert verdicts == ["passed"] + ["failed"] * len(hostile) + ["passed", "passed"]
    assert leftovers(client) == []
