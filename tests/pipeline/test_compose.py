"""docker-compose.yml against the code (no Docker engine here): commands, modules, settings, ports."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from services.pipeline.cli.main import SERVICE_NAMES, app

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_OF = {"buffer": "buffer", "judge": "judge", "generator": "generator", "trainer": "trainer",
               "trainer-worker": "trainer"}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def env_names(settings_cls: Any) -> set[str]:
    """Every environment variable a Settings class reads."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(c).upper() for c in alias.choices if isinstance(c, str) and c.upper().startswith("BTP_")}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + name).upper())
    return names


def _port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


def test_every_btp_service_is_described(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # judge-lb: nginx in front of the judge replicas; driver: `docker compose run --rm driver btp run ...`
    assert set(SETTINGS_OF) | {"postgres", "redis", "judge-lb", "driver"} == set(services)
    for name in SETTINGS_OF:
        svc = services[name]
        assert svc["build"]["dockerfile"] and (ROOT / svc["build"]["dockerfile"]).is_file()
        assert "healthcheck" in svc, name


def test_commands_name_real_modules(compose: dict[str, Any]) -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    assert "serve" in commands and "worker" in commands
    for name, svc in compose["services"].items():
        cmd = svc.get("command")
        if name in SERVICE_NAMES:
            assert cmd[:3] == ["btp", "serve", name]
            module = importlib.import_module(f"services.{name}.app")
            assert callable(module.create_app)
        elif name == "trainer-worker":
            assert cmd[0] == "celery"
            module = importlib.import_module(cmd[cmd.index("-A") + 1])
            assert module.app.main == "btp-trainer" or module.app is not None
            from services.trainer.settings import Settings as TrainerSettings

            assert cmd[cmd.index("-Q") + 1] == TrainerSettings().queue
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'btp = "services.pipeline.cli:main"' in pyproject


def test_environment_variables_are_real_settings(compose: dict[str, Any]) -> None:
    for name, owner in SETTINGS_OF.items():
        settings_cls = importlib.import_module(f"services.{owner}.settings").Settings
        known = env_names(settings_cls)
        env = compose["services"][name].get("environment", {})
        assert env, name
        unknown = [k for k in env if k.startswith("BTP_") and k not in known]
        assert not unknown, f"{name}: {unknown} are not settings of services.{owner}.settings.Settings"
        # and the values parse as those settings
        prefix = settings_cls.model_config["env_prefix"].lower()
        settings_cls.model_validate({k.lower().removeprefix(prefix): v for k, v in env.items()})


def test_ports_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = {name: _port(services[name]["command"]) for name in SERVICE_NAMES}
    assert ports == {"generator": 8001, "judge": 8002, "buffer": 8003, "trainer": 8004}
    for name, port in ports.items():
        svc = services[name]
        published = services["judge-lb"] if name == "judge" else svc  # judge replicas sit behind the balancer
        assert f"${{BTP_{name.upper()}_PORT:-{port}}}:{port}" in published["ports"]
        assert f":{port}/health" in " ".join(svc["healthcheck"]["test"])
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            m = re.fullmatch(r"BTP_(GENERATOR|JUDGE|BUFFER|TRAINER)_URL", key)
            if m:
                target = m.group(1).lower()
                hosts = {target, "judge-lb"} if target == "judge" else {target}
                assert value in {f"http://{h}:{ports[target]}" for h in hosts}, (name, key, value)


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):  # only the on-demand driver (a profile) starts after the stack is up
            assert svc.get("profiles") == ["driver"], name
            continue
        for dep, cond in deps.items():
            assert cond["condition"] == "service_healthy" and "healthcheck" in services[dep], (name, dep)
    judge = services["judge"]
    assert "SYS_ADMIN" in judge["cap_add"] and "seccomp=unconfined" in judge["security_opt"]
    assert services["buffer"]["environment"]["BTP_BUFFER_MIGRATE_ON_START"] == "true"
    shared = {"checkpoints:/checkpoints"}
    for name in ("generator", "trainer", "trainer-worker"):
        assert shared <= set(services[name]["volumes"]), name
    assert "checkpoints" in compose["volumes"]


def test_gpu_override_is_valid() -> None:
    data = yaml.safe_load((ROOT / "deploy" / "docker-compose.gpu.yml").read_text())
    gen = data["services"]["generator"]
    assert gen["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    from services.generator.settings import Settings as GeneratorSettings

    assert set(gen["environment"]) <= env_names(GeneratorSettings)


def test_driver_environment_is_pipeline_settings(compose: dict[str, Any]) -> None:
    from services.pipeline.settings import Settings as PipelineSettings

    known = env_names(PipelineSettings)
    env = compose["services"]["driver"]["environment"]
    assert {"BTP_PIPELINE_JUDGE_SPLIT", "BTP_PIPELINE_JUDGE_PARALLEL"} <= set(env)
    assert not [k for k in env if k.startswith("BTP_PIPELINE_") and k not in known]
    swarm_env = dict(line.split("=", 1) for line in (ROOT / "deploy/swarm/driver.env").read_text().splitlines()
                     if line and not line.startswith("#"))  # fmt: skip
    assert not [k for k in swarm_env if k not in known], swarm_env
    PipelineSettings.model_validate({k.lower().removeprefix("btp_pipeline_"): v for k, v in swarm_env.items()})


def test_swarm_stack_file_matches_compose(compose: dict[str, Any]) -> None:
    """deploy/docker-stack.yml (docker stack deploy) runs the same services, commands, settings and ports as
    docker-compose.yml, in the v3 form: no build, no depends_on, no security_opt; every service by DNS
    round-robin, judges on labelled nodes behind the same judge-lb.conf."""
    stack: dict[str, Any] = yaml.safe_load((ROOT / "deploy/docker-stack.yml").read_text())
    assert stack["version"].startswith("3.")
    services = stack["services"]
    assert set(services) == set(compose["services"]) - {"driver"}
    for name, svc in services.items():
        ref = compose["services"][name]
        assert not {"build", "depends_on", "security_opt", "profiles", "restart"} & set(svc), name
        assert svc.get("command") == ref.get("command"), name
        # published on the task's node (no routing mesh: it needs IPVS), under the same variables and ports
        ports = [f"{p['published']}:{p['target']}" for p in svc.get("ports") or [] if p["mode"] == "host"]
        assert ports == (ref.get("ports") or []), name
        assert svc["deploy"]["endpoint_mode"] == "dnsrr", name  # no virtual IPs either
        assert (svc.get("healthcheck") or {}).get("test") == (ref.get("healthcheck") or {}).get("test"), name
        assert svc["deploy"]["restart_policy"]["condition"] == "any", name
        env = svc.get("environment") or {}
        for key, value in (ref.get("environment") or {}).items():
            assert key in env, (name, key)
            if "${" not in str(env[key]) and key != "BTP_TRAINER_VISIBILITY_TIMEOUT_S":
                assert env[key] == value, (name, key)
        assert sorted(svc.get("volumes") or []) == sorted(v for v in ref.get("volumes") or [] if not v.startswith("./"))
    judge = services["judge"]
    assert judge["user"] == "root" and {"SYS_ADMIN", "NET_ADMIN"} <= set(judge["cap_add"])
    assert judge["deploy"]["replicas"] >= 2
    assert "node.labels.btp.judge == true" in judge["deploy"]["placement"]["constraints"]
    assert stack["configs"]["judge-lb"]["file"] == "./judge-lb.conf" and (ROOT / "deploy/judge-lb.conf").is_file()
    assert stack["networks"]["default"]["attachable"] is True
    profile = yaml.safe_load((ROOT / "deploy/swarm/judge-node-seccomp.json").read_text())
    denied = {n for rule in profile["syscalls"] for n in rule["names"]}
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW" and not {"pivot_root", "mount", "unshare", "clone"} & denied
    assert {"kexec_load", "init_module", "open_by_handle_at", "bpf"} <= denied


@pytest.mark.parametrize("path", ["docker-compose.yml", "deploy/docker-stack.yml"])
def test_generator_may_load_the_workers_checkpoints(path: str) -> None:
    """The generator accepts a checkpoint only under its model roots: the folder where the `checkpoints`
    volume is mounted (and where the workers write) must be one of them, or publishing fails."""
    from services.generator.settings import Settings as GeneratorSettings
    from services.trainer.settings import Settings as TrainerSettings

    services = yaml.safe_load((ROOT / path).read_text())["services"]
    gen_env = {k: v for k, v in services["generator"]["environment"].items() if "${" not in str(v)}
    gen = GeneratorSettings.model_validate({k.lower().removeprefix("btp_generator_"): v for k, v in gen_env.items()})
    mount = next(v.split(":")[1] for v in services["generator"]["volumes"] if v.startswith("checkpoints:"))
    roots = [r.resolve() for r in gen.allowed_model_roots()]
    assert any(Path(mount).resolve().is_relative_to(r) for r in roots), (mount, roots)
    worker_env = {k: v for k, v in services["trainer-worker"]["environment"].items() if "${" not in str(v)}
    worker = TrainerSettings.model_validate({k.lower().removeprefix("btp_trainer_"): v for k, v in worker_env.items()})
    assert Path(worker.checkpoints_dir) == Path(mount)
