"""Named interpreter environments: a real virtualenv with numpy, mounted read-only into containers of its own.

The environment is made once by deploy/judge-env.sh (the script users run) and cached under
``~/.cache/btp-test``; a machine where it cannot be made (no package index) skips with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.judge.app import create_app

from .conftest import ROOT, check_tests, judge, leftovers, make_settings

CACHE = Path.home() / ".cache" / "btp-test"
NUMPY_SUM = "import numpy as np\ndef f(xs):\n    return int(np.sum(np.array(xs) ** 2))\n"
SUMS = check_tests("candidate([1, 2, 3]) == 14", "candidate([]) == 0")


def make_scientific() -> Path:
    """The cached numpy environment (made by deploy/judge-env.sh); skips where it cannot be made."""
    env = CACHE / "judge-envs" / "scientific"
    if not (env / "bin" / "python").exists() or subprocess.run(
        [str(env / "bin" / "python"), "-c", "import numpy"], capture_output=True
    ).returncode:
        r = subprocess.run(
            ["bash", str(ROOT / "deploy" / "judge-env.sh"), "scientific", "numpy"],
            env={**os.environ, "BTP_DATA_DIR": str(CACHE)}, capture_output=True, text=True, timeout=900,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot make a judge environment with numpy here: {r.stderr.strip()[-300:]}")
    return env


@pytest.fixture(scope="module")
def scientific() -> Path:
    return make_scientific()


@pytest.fixture(scope="module")
def client(scientific: Path) -> Iterator[TestClient]:
    settings = make_settings(workers=1, environments={"scientific": str(scientific)}, environment_workers=1)
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_program_uses_numpy_in_its_environment_and_not_without(client: TestClient) -> None:
    res = judge(client, NUMPY_SUM, {**SUMS, "environment": "scientific"})  # per task (the test spec)
    assert res["verdict"] == "passed", res
    res = client.post("/v1/judge", json={"program": NUMPY_SUM, "tests": SUMS, "environment": "scientific"}).json()
    assert res["verdict"] == "passed", res  # per request
    bare = judge(client, NUMPY_SUM, SUMS)
    assert {c["status"] for c in bare["cases"]} == {"runtime_error"}
    assert "numpy" in bare["cases"][0]["detail"]
    health = client.get("/health").json()
    assert health["environments"] == {"scientific": {"workers": 1, "healthy": True}}


def test_an_unknown_environment_is_a_422_and_runs_nothing(client: TestClient) -> None:
    r = client.post("/v1/judge", json={"program": NUMPY_SUM, "tests": SUMS, "environment": "nope"})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "environment" and "scientific" in r.json()["error"]["message"]


def test_stdio_and_call_programs_use_it_too(client: TestClient) -> None:
    stdio = {"kind": "stdio", "environment": "scientific", "cases": [{"input": "1 2 3\n", "output": "6\n"}]}
    prog = "import numpy as np\nprint(int(np.array(input().split(), dtype=int).sum()))\n"
    assert judge(client, prog, stdio)["verdict"] == "passed"
    call = {"kind": "call", "fn_name": "f", "environment": "scientific", "cases": [{"args": [[1, 2]], "expected": 5}]}
    assert judge(client, NUMPY_SUM, call)["verdict"] == "passed"


HOSTILE = [
    # the environment is read-only: a program cannot plant code for the next one there
    ("import numpy, os\ndef f(xs):\n    p = os.path.join(os.path.dirname(numpy.__file__), 'evil.py')\n"
     "    open(p, 'w').write('x = 1')\n    return 14\n"),
    # the same seccomp filter: no user namespace (a private tmpfs outside the limits)
    "import ctypes\ndef f(xs):\n    return 14 if ctypes.CDLL(None).unshare(0x10000000) == 0 else -1\n",
    # numpy does not lift the memory limit
    "import numpy as np\ndef f(xs):\n    return int(np.ones(10 ** 9).sum())\n",
    # files left for the next program
    "def f(xs):\n    open('/tmp/left', 'w').write('x')\n    open('/work/left', 'w').write('x')\n    return -1\n",
]


@pytest.mark.parametrize("program", HOSTILE, ids=["writes_the_env", "unshare", "memory", "leaves_files"])
def test_the_same_isolation_holds_in_an_environment(client: TestClient, program: str) -> None:
    res = judge(client, program, {**SUMS, "environment": "scientific"})
    assert res["verdict"] == "failed" and res["passed"] == 0, res
    witness = (
        "import os, numpy\ndef f(xs):\n"
        "    left = os.listdir('/tmp') + os.listdir('/work')\n"
        "    left += [n for n in os.listdir(os.path.dirname(numpy.__file__)) if n == 'evil.py']\n"
        "    return 14 if not left and len(xs) == 3 else (0 if not xs else left)\n"
    )
    assert judge(client, witness, {**SUMS, "environment": "scientific"})["verdict"] == "passed"
    assert leftovers(client) == []
