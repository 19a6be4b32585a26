"""Models: the registry of known names (:mod:`.registry`), GGUF preparation into cached HF folders
(:mod:`.prepare`), and loading onto a device (:mod:`.loading`). Used openly by the generator, the trainer
and the CLI; torch and transformers are imported inside the functions that need them.
"""

from .loading import BUILD_LOCK, LoadedModel, is_adapter, load_folder, pick_device, pick_dtype
from .memory import release_memory, tune_malloc
from .prepare import (
    TOKENIZER_PROBE,
    assemble_chunks,
    check_available,
    check_tokenizer,
    convert_gguf,
    find_gguf,
    model_dir,
    prepare_model,
    resolve_model,
)
from .registry import (
    KNOWN_MODELS,
    MARKER,
    KnownModel,
    allowed_model_ref,
    check_model_name,
    is_instruct,
    is_local_model,
    known_model,
)

__all__ = [
    "BUILD_LOCK",
    "KNOWN_MODELS",
    "MARKER",
    "TOKENIZER_PROBE",
    "KnownModel",
    "LoadedModel",
    "allowed_model_ref",
    "assemble_chunks",
    "check_available",
    "check_model_name",
    "check_tokenizer",
    "convert_gguf",
    "find_gguf",
    "is_adapter",
    "is_instruct",
    "is_local_model",
    "known_model",
    "load_folder",
    "model_dir",
    "pick_device",
    "pick_dtype",
    "prepare_model",
    "release_memory",
    "resolve_model",
    "tune_malloc",
]
