"""Start-up mistakes, each in a real process: one line naming the dependency, the address or path tried and
the setting that changes it; exit code 1; the traceback only with ``BTP_LOG_LEVEL=DEBUG``.

Unreachable addresses are ports nothing listens on (127.0.0.1:5999); every case ends before any
service binds a port or loads a model, so each takes about as long as importing the service.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PG_DOWN = "postgresql://btp:secret@127.0.0.1:5999/btp"
REDIS_DOWN = "redis://:secret@127.0.0.1:5999/0"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env.update(BTP_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def btp(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.pipeline.cli", *args]


def uvicorn(name: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory", "--port", str(_free_port())]


def _first_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    return lines[0] if lines else ""


BUFFER_PG = ("error: buffer cannot start: PostgreSQL at 127.0.0.1:5999/btp is unreachable: connection refused "
             "(set BTP_DATABASE_URL)")  # fmt: skip
CASES = {
    "buffer-postgres": ("buffer", {"BTP_DATABASE_URL": PG_DOWN}, BUFFER_PG),
    "trainer-postgres": ("trainer", {"BTP_DATABASE_URL": PG_DOWN}, BUFFER_PG.replace("buffer", "trainer")),
    "trainer-redis": (
        "trainer",
        {"BTP_REDIS_URL": REDIS_DOWN},
        "error: trainer cannot start: Redis at redis://127.0.0.1:5999/0 is unreachable: connection refused "
        "(set BTP_REDIS_URL)",
    ),
    "generator-model": (
        "generator",
        {"BTP_GENERATOR_MODEL": "nope"},
        "error: generator cannot start: unknown model 'nope': not a folder, not a .gguf file and not one of "
        "SmolLM2-135M-Instruct, gemma-3-270m (set BTP_GENERATOR_MODEL)",
    ),
    "judge-bubblewrap": (
        "judge",
        {"BTP_JUDGE_BWRAP_PATH": "/nonexistent/bwrap"},
        "error: judge cannot start: bubblewrap ('/nonexistent/bwrap') is not installed: install the Debian "
        "package `bubblewrap`, or set BTP_JUDGE_BACKEND=process to run programs WITHOUT isolation (never for "
        "untrusted code) (set BTP_JUDGE_BWRAP_PATH)",
    ),
    "judge-bad-setting": (
        "judge",
        {"BTP_JUDGE_WORKERS": "many"},
        "error: judge cannot start: BTP_JUDGE_WORKERS='many': input should be a valid integer, unable to parse "
        "string as an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("how", ["btp serve", "uvicorn --factory"])
def test_a_service_names_its_missing_dependency(tmp_path: Path, case: str, how: str) -> None:
    service, env, line = CASES[case]
    args = btp("serve", service, "--port", str(_free_port())) if how == "btp serve" else uvicorn(service)
    proc = _run(args, _env(tmp_path, **env))
    assert (_first_line(proc), proc.returncode) == (line, 1), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr and "secret" not in proc.stderr


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    proc = _run(btp("serve", "buffer", "--port", str(_free_port())),
                _env(tmp_path, BTP_DATABASE_URL=PG_DOWN, BTP_LOG_LEVEL="DEBUG"))  # fmt: skip
    assert (_first_line(proc), proc.returncode) == (BUFFER_PG, 1)
    assert "Traceback (most recent call last)" in proc.stderr and "OperationalError" in proc.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = _run(btp("serve", "buffer", "--port", str(port)), _env(tmp_path))
    line = f"error: buffer cannot start: cannot listen on 127.0.0.1:{port}: Address already in use (set --host/--port)"
    assert (_first_line(proc), proc.returncode) == (line, 1), proc.stderr


def test_a_run_names_the_service_that_does_not_answer(tmp_path: Path) -> None:
    proc = _run(btp("run"), _env(tmp_path, BTP_BUFFER_URL="http://127.0.0.1:5999"))
    line = ("error: run cannot start: the buffer service at http://127.0.0.1:5999 does not answer: connection refused "
            "(set BTP_BUFFER_URL)")  # fmt: skip
    assert (_first_line(proc), proc.returncode) == (line, 1), proc.stderr
    assert not (tmp_path / "data" / "runs").exists()  # nothing was created


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"BTP_BUFFER_URL": "http://127.0.0.1:5999"},
         "error: the buffer service at http://127.0.0.1:5999 does not answer: connection refused (set BTP_BUFFER_URL)"),
        ({"BTP_DATABASE_URL": PG_DOWN},
         "error: PostgreSQL at 127.0.0.1:5999/btp is unreachable: connection refused (set BTP_DATABASE_URL)"),
        ({"BTP_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/btp_no_such_db"},
         'error: PostgreSQL at 127.0.0.1:5432/btp_no_such_db refused the connection: FATAL: database "btp_no_such_db" '
         "does not exist (set BTP_DATABASE_URL)"),
        ({"BTP_DATABASE_URL": "sqlite:////nonexistent/dir/btp.sqlite3"},
         "error: SQLite file /nonexistent/dir/btp.sqlite3 cannot be opened: unable to open database file "
         "(set BTP_DATABASE_URL)"),
    ],
)  # fmt: skip
def test_an_import_names_the_buffer_it_cannot_reach(tmp_path: Path, env: dict[str, str], line: str) -> None:
    proc = _run(btp("import", "humaneval"), _env(tmp_path, **env))
    assert (_first_line(proc), proc.returncode) == (line, 1), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


WORKER = ("error: worker cannot start: the Redis broker at redis://127.0.0.1:5999/0 did not answer within {wait}s: "
          "connection refused (set BTP_REDIS_URL, or BTP_TRAINER_BROKER_WAIT_S to wait longer)")  # fmt: skip


def test_the_worker_gives_up_on_its_broker(tmp_path: Path) -> None:
    proc = _run(btp("worker"), _env(tmp_path, BTP_REDIS_URL=REDIS_DOWN, BTP_TRAINER_BROKER_WAIT_S="0"))
    assert (_first_line(proc), proc.returncode) == (WORKER.format(wait=0), 1), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "secret" not in proc.stderr


def test_the_worker_says_which_broker_it_waits_for(tmp_path: Path) -> None:
    proc = _run(btp("worker"), _env(tmp_path, BTP_REDIS_URL=REDIS_DOWN, BTP_TRAINER_BROKER_WAIT_S="2"))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and lines[-1] == WORKER.format(wait=2), proc.stderr
    assert lines[0].endswith("waiting up to 2s for the Redis broker at redis://127.0.0.1:5999/0 (set BTP_REDIS_URL, "
                             "or BTP_TRAINER_BROKER_WAIT_S to wait longer)"), lines[0]  # fmt: skip
