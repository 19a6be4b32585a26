"""Loading a model folder (full model, or a PEFT LoRA adapter over a loaded base) onto a device."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import ValidationError

from .registry import is_instruct

BUILD_LOCK = threading.RLock()
"""Held while a model is built or loaded in this process. ``transformers`` (5.x) patches process-wide
functions while it builds a model (``PreTrainedModel.tie_weights`` and the ``torch.nn.init`` functions are
no-ops during ``from_pretrained``), so two threads loading at once can leave one model untied (its head
on the meta device) or uninitialised. Threads do load at once: an async run (the generator's swap beside
the trainer's load), the replicated generator client over in-process replicas."""


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
    version: int = 0  # the generator's weights version (0: the weights it started with); only moves forward
    lineage: str | None = None  # who numbers the versions (a run's name); a new lineage starts its own count


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
        with BUILD_LOCK:  # see BUILD_LOCK
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
                instruct = is_instruct(folder, tokenizer)
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
