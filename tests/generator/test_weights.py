"""POST /v1/weights: full folders, a LoRA adapter, bad checkpoints (4xx, old weights keep serving)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .conftest import teacher_forced, tiny_settings

REQ = {"prompts": ["def add(a, b):\n", "hello"], "num_beams": 2, "max_new_tokens": 8, "prompt_format": "raw"}


def load(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def assert_served_by(body: dict[str, Any], model: Any) -> None:
    for res in body["results"]:
        for c in res["candidates"]:
            ref = sum(teacher_forced(model, res["prompt_token_ids"], c["token_ids"]))
            assert abs(c["logprob"] - ref) < 1e-3


def test_swap_full_then_back(tiny_client: Any, tiny_dir: Path, tiny_dir_b: Path) -> None:
    before = tiny_client.post("/v1/generate", json=REQ).json()
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b)})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": tiny_dir_b.name, "checkpoint": str(tiny_dir_b), "kind": "full",
                        "previous": str(tiny_dir), "version": 1, "previous_version": 0, "lineage": None}
    assert tiny_client.get("/health").json()["checkpoint"] == str(tiny_dir_b)
    after = tiny_client.post("/v1/generate", json=REQ).json()
    assert after["checkpoint"] == str(tiny_dir_b)
    assert after["results"] != before["results"]
    assert_served_by(after, load(tiny_dir_b))
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir)}).status_code == 200
    again = tiny_client.post("/v1/generate", json=REQ).json()
    assert again["results"] == before["results"]


def test_lora_adapter(tiny_client: Any, tiny_dir: Path, lora_dir: Path) -> None:
    from peft import PeftModel

    before = tiny_client.post("/v1/generate", json=REQ).json()
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(lora_dir)})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "lora" and r.json()["checkpoint"] == str(lora_dir)
    h = tiny_client.get("/health").json()
    assert h["kind"] == "lora" and h["checkpoint"] == str(lora_dir)
    after = tiny_client.post("/v1/generate", json=REQ).json()
    assert after["results"] != before["results"]
    reference = PeftModel.from_pretrained(load(tiny_dir), str(lora_dir)).eval()
    assert_served_by(after, reference)


def test_bad_checkpoints_are_4xx_and_old_weights_keep_serving(
    tiny_client: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    before = tiny_client.post("/v1/generate", json=REQ).json()
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_dir, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text("{ this is not json")
    wrong_shapes = tmp_path / "wrong-shapes"
    shutil.copytree(tiny_dir, wrong_shapes)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_dir / "model.safetensors"))
    sd = {k: (torch.zeros(3, 3) if "q_proj" in k else v) for k, v in sd.items()}
    save_file(sd, str(wrong_shapes / "model.safetensors"))
    bad_adapter = tmp_path / "bad-adapter"
    bad_adapter.mkdir()
    (bad_adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "target_modules": ["nope"], "r": 4}')
    cases = {
        str(tmp_path / "does-not-exist"): 404,
        "no-such-model-name": 422,  # neither a known name nor an absolute path
        str(empty): 422,
        str(garbage): 422,
        str(bad_config): 422,
        str(wrong_shapes): 422,
        str(bad_adapter): 422,
    }
    for checkpoint, status in cases.items():
        r = tiny_client.post("/v1/weights", json={"checkpoint": checkpoint})
        assert r.status_code == status, (checkpoint, r.text)
        assert r.json()["error"]["message"]
        assert tiny_client.get("/health").json()["checkpoint"] == str(tiny_dir)
    assert tiny_client.post("/v1/generate", json=REQ).json() == before


def test_weights_only_from_known_names_or_under_the_model_roots(tiny_dir: Path, tiny_dir_b: Path, tmp_path: Path) -> None:
    """Issue 14: a client names a known model or a folder under the roots (symlinks resolved); every other
    path gets the same answer, whether it exists, holds a model, or not."""
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    data = tmp_path / "data"
    inside = data / "checkpoints" / "job" / "step-1"
    shutil.copytree(tiny_dir_b, inside)
    (data / "checkpoints" / "escape").symlink_to(tiny_dir_b, target_is_directory=True)
    settings = tiny_settings(tiny_dir, data, model_roots=[])
    outside = {
        str(tiny_dir_b): "a real model folder outside the roots",
        "/no/such/folder": "a missing folder",
        "/etc": "a host folder",
        str(data / "checkpoints" / ".." / ".." / tiny_dir_b.relative_to("/")): "dot-dot out of a root",
        str(data / "checkpoints" / "escape"): "a symlink inside a root pointing out",
        "checkpoints/job/step-1": "a relative path",
        str(inside) + "\x00": "a NUL byte",
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answers = set()
        for checkpoint, what in outside.items():
            r = client.post("/v1/weights", json={"checkpoint": checkpoint})
            assert r.status_code == 422, (what, r.text)
            answers.add(json.dumps(r.json()))
        assert len(answers) == 1, answers  # nothing tells which host folders exist
        assert json.loads(answers.pop())["error"]["param"] == "checkpoint"
        assert client.get("/health").json()["checkpoint"] == str(tiny_dir)
        r = client.post("/v1/weights", json={"checkpoint": str(inside)})
        assert r.status_code == 200, r.text
        assert r.json()["checkpoint"] == str(inside.resolve())
        r = client.post("/v1/weights", json={"checkpoint": str(tiny_dir)})  # back to the configured model
        assert r.status_code == 200, r.text


def test_versions_only_move_forward(tiny_client: Any, tiny_dir: Path, tiny_dir_b: Path) -> None:
    assert tiny_client.post("/v1/generate", json=REQ).json()["weights_version"] == 0
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b), "version": 3, "lineage": "run-a"})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["previous_version"], r.json()["lineage"]) == (3, 0, "run-a")
    assert tiny_client.post("/v1/generate", json=REQ).json()["weights_version"] == 3
    swaps = tiny_client.get("/health").json()
    # an older version, or the same version with other weights: refused, the served weights stay
    for body in ({"checkpoint": str(tiny_dir), "version": 2, "lineage": "run-a"},
                 {"checkpoint": str(tiny_dir), "version": 3},
                 {"checkpoint": str(tiny_dir), "version": 0}):  # fmt: skip
        r = tiny_client.post("/v1/weights", json=body)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["type"] == "conflict" and r.json()["error"]["param"] == "version"
        h = tiny_client.get("/health").json()
        assert (h["checkpoint"], h["weights_version"]) == (str(tiny_dir_b), 3)
    # a retried publish (same version, same weights) is a no-op
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b), "version": 3, "lineage": "run-a"})
    assert r.status_code == 200 and r.json()["version"] == 3
    assert tiny_client.get("/health").json() == swaps
    # no version: the next one; another lineage (a new run) starts its own count
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir)}).json()["version"] == 4
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b), "version": 0, "lineage": "run-b"})
    assert r.status_code == 200 and (r.json()["version"], r.json()["lineage"]) == (0, "run-b")
    assert tiny_client.post("/v1/generate", json=REQ).json()["weights_version"] == 0
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir), "version": -1}).status_code == 422


def test_swaps_between_batches_drop_no_request(tiny_client: Any, tiny_dir: Path, tiny_dir_b: Path) -> None:
    """Clients keep generating while the weights change under them: every request answers 200, from
    exactly one published version, and each client sees versions in order (never an older one)."""
    import threading

    folders = {0: str(tiny_dir)}
    seen: dict[int, list[tuple[int, str]]] = {i: [] for i in range(3)}
    failures: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            r = tiny_client.post("/v1/generate", json=REQ | {"prompts": [f"def f{i}(x):"]})
            if r.status_code != 200:
                failures.append(r.text)
                return
            seen[i].append((r.json()["weights_version"], r.json()["checkpoint"]))

    threads = [threading.Thread(target=client, args=(i,)) for i in seen]
    for t in threads:
        t.start()
    try:
        for version in range(1, 7):
            while sum(len(v) for v in seen.values()) < 2 * version and not failures:
                threading.Event().wait(0.01)
            folder = str(tiny_dir_b if version % 2 else tiny_dir)
            r = tiny_client.post("/v1/weights", json={"checkpoint": folder, "version": version, "lineage": "swap"})
            assert r.status_code == 200, r.text
            folders[version] = folder
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures
    for answers in seen.values():
        versions = [v for v, _ in answers]
        assert versions == sorted(versions) and answers
        assert all(folders[v] == checkpoint for v, checkpoint in answers)
    assert len({v for answers in seen.values() for v, _ in answers}) >= 4  # the swaps really interleaved


def test_park_releases_the_weights_and_the_next_request_reloads_them(
    tiny_client: Any, tiny_dir: Path, tiny_dir_b: Path, lora_dir: Path
) -> None:
    """What the embedded btp run does while it trains: the weights are dropped, the next request (or swap)
    brings them back, and the answers are the same as before."""
    import weakref

    engine = tiny_client.app.state.engine
    before = tiny_client.post("/v1/generate", json=REQ).json()
    gone = weakref.ref(engine.current.model)
    assert engine.park() is True
    assert engine.current is None
    for _ in range(200):  # the batcher thread drops its last job right after answering it
        if gone() is None:
            break
        time.sleep(0.01)
    assert gone() is None  # nothing holds the old weights any more
    h = tiny_client.get("/health").json()
    assert h["parked"] is True and h["checkpoint"] == str(tiny_dir)
    assert tiny_client.post("/v1/generate", json=REQ).json() == before  # reloaded from disk on use
    assert engine.current is not None and tiny_client.get("/health").json()["parked"] is False
    # a swap while parked loads the new weights only; an adapter goes on the parked base
    assert engine.park() is True
    r = tiny_client.post("/v1/weights", json={"checkpoint": str(lora_dir)})
    assert r.status_code == 200 and r.json()["previous"] == str(tiny_dir)
    assert engine.park() is False  # a merged LoRA model has no folder to reload from
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir_b)}).status_code == 200
    assert engine.park() is True
    assert tiny_client.post("/v1/weights", json={"checkpoint": str(tiny_dir)}).json()["previous"] == str(tiny_dir_b)
    assert tiny_client.post("/v1/generate", json=REQ).json()["results"] == before["results"]
