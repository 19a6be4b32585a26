"""Generator settings: ``BTP_GENERATOR_*`` environment variables (plus the shared ``BTP_*`` ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.prompts import CHAT_STOP, RAW_STOP
from services.common.settings import CommonSettings

DEFAULT_MODEL = "SmolLM2-135M-Instruct"

class Settings(CommonSettings):
    """Settings of the generator service."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_GENERATOR_", extra="ignore", populate_by_name=True, validate_default=True
    )

    model: str = Field(
        default=DEFAULT_MODEL,
        description="Model served: a local Hugging Face folder, a .gguf file or a known name "
        "(SmolLM2-135M-Instruct, gemma-3-270m).",
    )
    device: str = Field(default="auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    dtype: str = Field(
        default="auto", description="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16."
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Where converted models are cached; default <data_dir>/models."
    )
    max_batch_prompts: int = Field(
        default=16, ge=1, le=1024, description="Prompts decoded together in one batch (dynamic batching)."
    )
    batch_wait_ms: float = Field(
        default=5.0, ge=0.0, le=1000.0, description="How long the batcher waits for more requests to join."
    )
    max_queue: int = Field(
        default=64, ge=1, le=100000, description="Requests waiting or running at most; more are refused (429)."
    )
    max_work_tokens: int = Field(
        default=3 * 256 * 64,
        ge=1,
        description="Largest prompts x beams (or samples) x max_new_tokens one request may ask for (422 above).",
    )
    max_prompt_tokens: int = Field(
        default=2048, ge=1, description="Longest prompt in tokens, after any chat template (422 above)."
    )
    raw_stop: list[str] = Field(
        default_factory=lambda: list(RAW_STOP),
        description="Stop sequences for raw prompts when the request gives none.",
    )
    chat_stop: list[str] = Field(
        default_factory=lambda: list(CHAT_STOP),
        description="Stop sequences for chat prompts when the request gives none (the closing fence always applies).",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="CPU threads for torch (process-wide); 0 = half the cores, at least 1. Oversubscribed "
        "threads are catastrophic on a shared small machine (14x slower measured on 2 busy cores).",
    )
    use_cuda_beam: bool = Field(
        default=True, description="Use services.generator.cuda on CUDA devices when it imports."
    )

    def resolved_model_cache_dir(self) -> Path:
        """The converted-model cache directory."""
        return self.model_cache_dir or (self.data_dir / "models")

    def allowed_model_roots(self) -> list[Path]:
        """Where ``POST /v1/weights`` may point: the shared roots, the model cache and the configured model
        itself (so a client can swap back to it)."""
        roots = [*super().allowed_model_roots(), self.resolved_model_cache_dir()]
        if self.model.startswith(("/", "~")):
            roots.append(Path(self.model).expanduser())
        return roots
