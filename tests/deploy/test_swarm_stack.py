"""deploy/docker-stack.yml on a single-node Docker Swarm (issue 16): `docker stack deploy`, every service
answering, the judge sandboxing in a swarm service (bwrap, privileged mode) on a node whose daemon runs the
judge-node seccomp profile, the driver's judge requests spread over two judge replicas, and one `btp run`
round from a container on the stack's network.

Opt-in and slow (about 10 minutes on 2 cores): runs only with ``BTP_DOCKER_TESTS=1``, a running Docker engine
started with ``--seccomp-profile`` deploy/swarm/judge-node-seccomp.json (deploy/compose-test/run.sh does that)
and the images of deploy/compose-test/build-images.sh; anywhere else it is skipped with the reason. It joins
no other swarm: when this engine is not in one it runs ``docker swarm init`` and leaves afterwards. The stack is
``btpswarm`` on host ports 28001-28004; measured times go to ``$BTP_DOCKER_RESULTS`` under "swarm".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = "btpswarm"
PORTS = {"generator": 28001, "judge": 28002, "buffer": 28003, "trainer": 28004}
IMAGES = ["btp:latest", "postgres:16", "redis:7", "nginx:1.27"]
RUN = ["--train-size", "2", "--test-size", "2", "--steps", "1", "--n", "2", "--rounds", "1", "--max-new-tokens", "64",
       "--dataset", "humaneval", "--k", "2"]  # fmt: skip
RESULTS: dict[str, Any] = {}


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=_env())
    if check:
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return r.stdout.strip()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name, port in PORTS.items():
        env[f"BTP_{name.upper()}_PORT"] = str(port)
    env.setdefault("BTP_DEVICE", "cpu")
    env.setdefault("BTP_TRAINER_VISIBILITY_TIMEOUT_S", "300")
    return env


def _skip_reason() -> str | None:
    if os.environ.get("BTP_DOCKER_TESTS") != "1":
        return "docker stack tests are opt-in: set BTP_DOCKER_TESTS=1 (or run deploy/compose-test/run.sh)"
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{json .SecurityOptions}}"], capture_output=True,
                           text=True, timeout=15)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if r.returncode != 0:
        return f"no Docker engine running ({r.stderr.strip()[:200]})"
    if "profile=default" in r.stdout or "seccomp" not in r.stdout:
        return ("the judge needs pivot_root in a swarm service: start dockerd with --seccomp-profile "
                "deploy/swarm/judge-node-seccomp.json (this engine: " + r.stdout.strip()[:200] + ")")
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode]
    if missing:
        return f"images missing: {', '.join(missing)} (build them with deploy/compose-test/build-images.sh)"
    return None


REASON = _skip_reason()
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400), pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def http(service: str, method: str, path: str, body: Any = None, timeout: float = 600) -> Any:
    import httpx

    r = httpx.request(method, f"http://127.0.0.1:{PORTS[service]}{path}", json=body, timeout=timeout)
    assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text[:500]}"
    return r.json()


def answers(service: str) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{PORTS[service]}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def tasks(service: str) -> list[str]:
    """Running containers of a stack service on this node."""
    return _docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}").split()


def replicas() -> dict[str, str]:
    out = _docker("stack", "services", STACK, "--format", "{{.Name}} {{.Replicas}}")
    return dict(line.split(" ", 1) for line in out.splitlines())


def healthy(cid: str) -> bool:
    st = json.loads(_docker("inspect", "-f", "{{json .State}}", cid))
    return bool(st["Running"]) and (st.get("Health") or {}).get("Status", "healthy") == "healthy"


def judge_requests(cid: str) -> int:
    r = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
    return len(re.findall(r'"POST /v1/judge(/batch)? HTTP', r.stdout + r.stderr))


def save_results() -> None:
    path = Path(os.environ.get("BTP_DOCKER_RESULTS", "/tmp/btp-compose-results.json"))
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, "swarm": RESULTS}, indent=2))


def _remove_stack() -> None:
    _docker("stack", "rm", STACK, check=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # its network and containers go a little after `stack rm` returns
        if not _docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}", check=False) and \
                f"{STACK}_default" not in _docker("network", "ls", "--format", "{{.Name}}", check=False):  # fmt: skip
            break
        time.sleep(2)
    for vol in ("pgdata", "models", "checkpoints", "runs"):
        _docker("volume", "rm", f"{STACK}_{vol}", check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    created = False
    if _docker("info", "--format", "{{.Swarm.LocalNodeState}}") != "active":
        addr = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
        _docker("swarm", "init", "--advertise-addr", addr)
        created = True
    _docker("node", "update", "--label-add", "btp.judge=true", _docker("info", "--format", "{{.Swarm.NodeID}}"))
    _remove_stack()
    try:
        start = time.monotonic()
        out = _docker("stack", "deploy", "-c", str(ROOT / "deploy/docker-stack.yml"), STACK, timeout=300)
        RESULTS["deploy_output"] = out[-2000:]
        deadline = time.monotonic() + 900
        while True:
            reps = replicas()
            ready = all(r.split()[0].split("/")[0] == r.split()[0].split("/")[1] for r in reps.values())
            ready = ready and len(reps) == 8 and all(answers(s) for s in PORTS)
            ready = ready and all(healthy(c) for s in ("judge", "trainer-worker") for c in tasks(s))
            if ready:
                break
            if time.monotonic() > deadline:
                ps = _docker("stack", "ps", STACK, "--no-trunc", "--format", "{{.Name}} {{.CurrentState}} {{.Error}}")
                raise AssertionError(f"stack not up after 900 s: {reps}\n{ps[-4000:]}")
            time.sleep(3)
        RESULTS["stack_up_s"] = round(time.monotonic() - start, 1)
        RESULTS["replicas"] = reps
        save_results()
        yield
    finally:
        save_results()
        if os.environ.get("BTP_DOCKER_KEEP") != "1":
            _remove_stack()
            if created:
                _docker("swarm", "leave", "--force", check=False)


def test_stack_deploys_and_the_judge_sandboxes(stack: None) -> None:
    """Every service of deploy/docker-stack.yml runs its replicas; the judge replicas sandbox with
    bubblewrap in its privileged mode (root + SYS_ADMIN, the node's seccomp profile)."""
    assert replicas()[f"{STACK}_judge"].startswith("2/2")
    health = http("judge", "GET", "/health")
    assert health["backend"] == "bwrap" and health["privileged"] is True, health
    prog = {"program": "import os\ndef uid():\n    return os.getuid()\n",
            "tests": {"kind": "check", "entry_point": "uid", "code": "def check(candidate):\n    assert candidate() >= 60000\n"}}  # fmt: skip
    assert http("judge", "POST", "/v1/judge", prog)["pass_rate"] == 1.0  # the program ran as a sandbox uid
    RESULTS["judge_health"] = health


def test_driver_round_on_the_swarm(stack: None) -> None:
    """One `btp run` round from a container on the stack's overlay network (deploy/swarm/driver.env), one
    program per judge request: the requests spread over both judge replicas, and the round publishes its
    checkpoint to the generator."""
    judges = tasks("judge")
    before = {c: judge_requests(c) for c in judges}
    start = time.monotonic()
    out = _docker("run", "--rm", "--network", f"{STACK}_default", "--env-file", str(ROOT / "deploy/swarm/driver.env"),
                  "-e", "BTP_PIPELINE_JUDGE_SPLIT=1", "-v", f"{STACK}_runs:/data/runs", "btp:latest",
                  "btp", "run", "--name", "swarm-round", *RUN, timeout=1800)  # fmt: skip
    RESULTS["btp_run_round_s"] = round(time.monotonic() - start, 1)
    RESULTS["btp_run_output"] = out[-1500:]
    st = json.loads(_docker("run", "--rm", "-v", f"{STACK}_runs:/runs", "btp:latest", "cat", "/runs/swarm-round/state.json"))
    assert st.get("finished_at") and st.get("checkpoint"), st
    assert {"eval:0", "sample:1", "judge:1", "train:1", "eval:1"} <= set(st["done"]), st
    assert http("generator", "GET", "/health").get("checkpoint") == st["checkpoint"]
    per_replica = {c[:12]: judge_requests(c) - before[c] for c in judges}
    RESULTS["driver_judge_requests_per_replica"] = per_replica
    assert sum(per_replica.values()) >= 6 and all(v > 0 for v in per_replica.values()), per_replica
    save_results()
