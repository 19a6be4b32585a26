"""`btp stack up --generators N`: the replicas' ports, commands, GPUs and the URL list the others get."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.spread import split_urls
from services.pipeline.cli.stack import StackConfig


def test_one_generator_is_the_plain_stack(tmp_path: Path) -> None:
    cfg = StackConfig(data_dir=tmp_path)
    assert cfg.generator_names() == ["generator"]
    assert cfg.env()["BTP_GENERATOR_URL"] == "http://127.0.0.1:8001"
    assert "CUDA_VISIBLE_DEVICES" not in cfg.child_env("generator", {"A": "1"})
    assert not [n for n in cfg.commands() if n.startswith("generator-")]


def test_replicas_get_a_port_and_a_gpu_each(tmp_path: Path) -> None:
    cfg = StackConfig(data_dir=tmp_path, generators=3)
    assert cfg.generator_names() == ["generator", "generator-1", "generator-2"]
    env = cfg.env()
    assert split_urls(env["BTP_GENERATOR_URL"]) == [
        "http://127.0.0.1:8001", "http://127.0.0.1:8011", "http://127.0.0.1:8021"]
    cmds = cfg.commands()
    for name, port in (("generator-1", 8011), ("generator-2", 8021)):
        assert "services.generator.app:create_app" in cmds[name] and str(port) in cmds[name]
    base = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    assert [cfg.child_env(n, base)["CUDA_VISIBLE_DEVICES"] for n in cfg.generator_names()] == ["0", "1", "2"]
    # the parent's own GPU list is dealt out; the trainer worker keeps all of it
    narrowed = {**base, "CUDA_VISIBLE_DEVICES": "4,6,7"}
    assert [cfg.child_env(n, narrowed)["CUDA_VISIBLE_DEVICES"] for n in cfg.generator_names()] == ["4", "6", "7"]
    assert cfg.child_env("worker", narrowed)["CUDA_VISIBLE_DEVICES"] == "4,6,7"


def test_zero_generators_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StackConfig(data_dir=tmp_path, generators=0)


def test_the_driver_checks_every_replica_before_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator list whose replicas do not answer fails the start-up check, naming the setting."""
    from services.common.startup import StartupError
    from services.pipeline.cli.stack import free_port
    from services.pipeline.connect import check_remote_services
    from services.pipeline.settings import Settings

    for name in ("GENERATOR", "JUDGE", "BUFFER", "TRAINER"):
        monkeypatch.delenv(f"BTP_{name}_URL", raising=False)
    urls = f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"
    with pytest.raises(StartupError) as info:
        check_remote_services(Settings(generator_url=urls), timeout_s=2.0)
    assert info.value.setting == "BTP_GENERATOR_URL" and urls in info.value.message
