"""The sandbox itself: run_in_sandbox, what a program can see, refusing to start without bubblewrap,
and the opt-in unsandboxed backend."""

from __future__ import annotations

import logging
import os

import pytest
from fastapi.testclient import TestClient

from services.judge.app import create_app
from services.judge.sandbox import SandboxPool, SandboxUnavailable, probe_sandbox, run_in_sandbox

from .conftest import ROOT, SECRET_ENV, check_tests, judge, make_settings

PROBE = r"""
import os, socket, sys
print("uid", os.getuid())
print("root", sorted(os.listdir("/")))
print("cwd", os.getcwd())
print("env", sorted(os.environ))
print("ifaces", sorted(n for _, n in socket.if_nameindex()))
print("hostname", socket.gethostname())
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
for path in ("/usr/x", "/x"):
    try:
        open(path, "w")
        print("wrote", path)
    except OSError as e:
        print("denied", path, e.errno)
print("stdin", sys.stdin.read())
sys.exit(7)
"""


@pytest.fixture(scope="module")
def pool() -> SandboxPool:
    p = SandboxPool(make_settings(workers=1), size=1)
    p.start()
    yield p
    p.close()


def test_run_in_sandbox_reports_exit_code_output_and_flags(pool: SandboxPool) -> None:
    r = run_in_sandbox(PROBE, stdin="hello", time_s=5, pool=pool)
    assert r.exit_code == 7 and not r.timed_out and not r.memory_exceeded and not r.output_exceeded
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert int(lines["uid"]) == pool.settings.uid_base  # not root: the container's own uid
    root = eval(lines["root"])
    assert "work" in root and "usr" in root and "etc" not in root and "home" not in root and "root" not in root
    assert lines["cwd"] == "/work"
    env = eval(lines["env"])
    assert SECRET_ENV[0] not in env and not any(k.startswith("BTP") for k in env)
    assert eval(lines["ifaces"]) == ["lo"]  # a network namespace of its own: loopback only
    assert lines["hostname"] == "sandbox"
    assert max(eval(lines["pids"])) < 100  # its own pid namespace
    assert "denied /usr/x" in r.stdout and "denied /x" in r.stdout
    assert lines["stdin"] == "hello"
    assert r.wall_ms > 0


def test_run_in_sandbox_limits(pool: SandboxPool) -> None:
    assert run_in_sandbox("while True: pass", time_s=0.5, pool=pool).timed_out
    assert run_in_sandbox("x = ' ' * (2 ** 31)", memory_mb=128, pool=pool).memory_exceeded
    big = run_in_sandbox("print('x' * 100000)", output_kb=10, pool=pool)
    assert big.output_exceeded and len(big.stdout) <= 10 * 1024
    err = run_in_sandbox("raise ValueError('boom')", pool=pool)
    assert err.exit_code == 1 and "ValueError: boom" in err.stderr


def test_run_in_sandbox_without_a_pool_uses_a_fresh_container() -> None:
    r = run_in_sandbox("print(sum(range(10)))", settings=make_settings(workers=1))
    assert r.exit_code == 0 and r.stdout == "45\n"


def test_service_files_are_invisible(pool: SandboxPool) -> None:
    r = run_in_sandbox(f"import os\nprint(os.path.exists({str(ROOT)!r}), os.path.exists('/etc/passwd'))", pool=pool)
    assert r.stdout == "False False\n"


def test_refuses_to_start_without_bubblewrap(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(workers=1, bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        probe_sandbox(settings)
    with (
        pytest.raises(RuntimeError, match=r"judge cannot start: .*bubblewrap.*BTP_JUDGE_BACKEND=process"),
        TestClient(create_app(settings)),
    ):
        pass


def test_refuses_to_start_when_namespaces_fail(tmp_path: os.PathLike[str]) -> None:
    fake = os.path.join(str(tmp_path), "bwrap")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    with (
        pytest.raises(RuntimeError, match=r"cannot create its namespaces.*No permissions"),
        TestClient(create_app(make_settings(workers=1, bwrap_path=fake))),
    ):
        pass


def test_process_backend_is_opt_in_and_warns_on_every_start(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(workers=1, backend="process")
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as c:
            assert c.get("/health").json()["backend"] == "process"
            res = judge(c, "def f(x):\n    return x * 2\n", check_tests("candidate(2) == 4", "candidate(3) == 5"))
            assert res["passed"] == 1 and res["total"] == 2
            res = judge(c, "def f():\n    while True: pass\n", check_tests("candidate()"), {"time_s": 0.3})
            assert res["cases"][0]["status"] == "timeout"
        assert any("WITHOUT any sandbox" in r.getMessage() for r in caplog.records)


def test_containers_get_cgroup_limits_where_the_host_allows(client: TestClient) -> None:
    judge_state = client.app.state.judge  # type: ignore[attr-defined]
    if not client.get("/health").json()["cgroups"]:
        pytest.skip("this host does not let the judge create cgroups")
    for box in judge_state.pool.boxes:
        assert box.cgroup is not None and box.cgroup.dirs
        for d in box.cgroup.dirs:
            members = set((d / "cgroup.procs").read_text().split())
            assert str(box.pid) in members or members  # the container's processes are in it
            limit_file = next(f for f in ("memory.limit_in_bytes", "memory.max", "pids.max") if (d / f).exists())
            assert (d / limit_file).read_text().strip() not in ("", "max")


def test_cgroups_are_removed_with_their_containers() -> None:
    with TestClient(create_app(make_settings(workers=1))) as c:
        dirs = [d for b in c.app.state.judge.pool.boxes if b.cgroup for d in b.cgroup.dirs]  # type: ignore[attr-defined]
    assert not any(d.exists() for d in dirs)
