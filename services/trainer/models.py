"""Which models a job may name: a local Hugging Face folder, or a known name the generator prepares.

Nothing here imports torch, so the API can validate ``model`` before it enqueues a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.errors import ValidationError
from services.common.settings import default_data_dir

KNOWN_MODELS = frozenset({"SmolLM2-135M-Instruct", "gemma-3-270m"})
"""Fallback list of names that resolve through ``services.generator.models.prepare_model`` (offline, no model hub)."""


def is_local_model(name: str) -> bool:
    """A folder holding a Hugging Face ``config.json``."""
    try:
        path = Path(name).expanduser()
        return path.is_dir() and (path / "config.json").is_file()
    except (OSError, ValueError):
        return False


def is_known_model(name: str) -> bool:
    """A name the generator's model registry knows (its aliases too), else one of :data:`KNOWN_MODELS`."""
    import importlib

    try:
        # services.generator.models imports torch only inside functions, so this stays torch-free.
        registry: Any = importlib.import_module("services.generator.models")
        return registry.known_model(name) is not None
    except (ImportError, AttributeError):
        return name.strip().lower() in {m.lower() for m in KNOWN_MODELS}


def check_model_name(name: str) -> None:
    """Raise a 422 unless ``name`` is a known model or a local HF folder."""
    if is_known_model(name) or is_local_model(name):
        return
    known = ", ".join(sorted(KNOWN_MODELS))
    raise ValidationError(
        f"unknown model {name!r}: give a local Hugging Face folder (with config.json) or one of: {known}",
        param="model",
    )


def resolve_model(name: str, *, data_dir: Path | None = None) -> Path:
    """The local folder of ``name``; known names are prepared (once, then cached) by the generator's code."""
    if is_local_model(name):
        return Path(name).expanduser().resolve()
    if is_known_model(name):
        import importlib

        # Lazy: the generator's code imports torch and transformers. Same cache as the generator's default.
        prepare: Any = importlib.import_module("services.generator.models").prepare_model
        cache = (data_dir or default_data_dir()) / "models"
        return Path(prepare(name, cache)).resolve()
    check_model_name(name)
    raise AssertionError("unreachable")  # pragma: no cover
