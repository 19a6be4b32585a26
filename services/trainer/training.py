"""The training loop: PPER minibatches from the buffer -> program-only loss -> AdamW steps -> checkpoints.

No Celery and no FastAPI here: the Celery task (:mod:`.runner`), the embedded pipeline and the benchmark
all call these functions.

- Each example is prompt X followed by program t (and EOS). Only the positions whose next token is a
  program token carry loss; the hidden states of exactly those positions go through the LM head, so the
  vocabulary projection (a quarter of the FLOPs of a 135M-0.5B model) is never spent on prompt tokens.
- Length bucketing: the examples of an optimizer step are sorted by length and cut into micro-batches of
  ``micro_batch_size``, so padding is only the length spread inside a micro-batch. Gradients accumulate
  over micro-batches; each micro-batch's summed loss is divided by the program-token count of the whole
  step, so the step's loss is the exact token mean whatever the split.
- AdamW (fused on CUDA), linear warm-up, gradient-norm clipping, bf16 autocast on GPU (fp32 master weights).
- Full fine-tuning or LoRA (peft) on the attention and MLP projections.
- Resume: every ``checkpoint_every`` steps an atomic checkpoint (:mod:`.checkpoint`) with the optimizer
  and RNG state. Minibatch ``s`` is always sampled with a seed derived from (job seed, s), so an attempt
  that resumes from step N sees the same data as the attempt that died after N.
- Several GPUs: started by ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1). The job trains on the
  same global minibatch as one process would, so N GPUs give one GPU's loss curve (up to float rounding):
  rank 0 draws minibatch ``s`` from the buffer with the one-process seed and broadcasts it; every rank
  takes its share (:func:`.data.shard`: length order dealt round-robin, balanced tokens); each rank's
  summed loss is divided by the program-token count of the *global* minibatch and multiplied by N, and
  DDP's gradient mean over N ranks then equals the one-process gradient exactly. Rank 0 alone writes
  checkpoints, TensorBoard and the job record.
- DDP, not FSDP: the models trained here are 135M-0.5B parameters. Full fine-tuning keeps fp32 weights,
  gradients and two AdamW moments, 16 bytes a parameter: 8 GB for Qwen2-0.5B on a 141 GB H200, so a
  replica per GPU fits many times over and activations get the rest. DDP then costs one bucketed
  all-reduce of the gradients per step, overlapped with the backward pass; FSDP would add an all-gather
  of every layer's weights in the forward and again in the backward, plus a reduce-scatter, to save
  memory that is not short. FSDP pays off only when 16 bytes/parameter plus activations exceed one GPU
  (roughly 7B parameters on an H200), which no model of this project approaches.

(About 575 lines: the job loop, the step runner, the shared distributed minibatch and the resume logic
share state that is clearer read together than split.)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.common.client import BufferClient
from services.common.errors import BTPError, ValidationError
from services.common.prompts import resolve_format
from services.common.schemas.buffer import SampledItem
from services.common.schemas.trainer import JobCreate, LossPoint
from services.common.settings import default_data_dir
from services.models import BUILD_LOCK, is_instruct, model_dir, tune_malloc

from . import checkpoint as ckpt
from .data import (
    Example,
    MicroBatch,
    auto_token_budget,
    bucket,
    collate,
    make_example,
    program_tokens,
    shard,
    tokenize,
)

log = logging.getLogger(__name__)

__all__ = [
    "Example", "JobConfigError", "MicroBatch", "ProgramLoss", "StepRunner", "TrainResult", "auto_token_budget",
    "bucket", "collate", "compile_layers", "gradient_checkpointing", "load_model", "make_example", "make_optimizer",
    "run_job", "shard", "tokenize",
]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_MICRO_BATCH = 8


class JobConfigError(ValidationError):
    """The job cannot run as configured (unknown model, LoRA not applicable, nothing to sample...)."""


# --- model -----------------------------------------------------------------------------------------


LOSS_CHUNK_BYTES = 64 << 20
"""CPU: fp32 logits per chunk of the chunked loss (SmolLM2's 49,152-token vocabulary: 341 positions)."""


def loss_chunk_positions(vocab_size: int, device: torch.device) -> int | None:
    """Positions per chunk of the chunked cross-entropy: on a CPU, as many as fit :data:`LOSS_CHUNK_BYTES` of
    fp32 logits (at least 64); None elsewhere (the compiled GPU path keeps one fused head matmul)."""
    if device.type != "cpu" or vocab_size <= 0:
        return None
    return max(64, LOSS_CHUNK_BYTES // (4 * vocab_size))


class ProgramLoss(nn.Module):
    """Summed cross-entropy over the scored positions only; the module DDP wraps.

    With ``chunk`` set, the head and the cross-entropy run over ``chunk`` positions at a time under
    activation checkpointing: only one chunk's logits exist at once, in the forward pass and again in the
    backward pass (which recomputes them), instead of positions x vocabulary fp32 logits, their softmax and
    their gradient (about 0.7 GB for a micro-batch of 8 SmolLM2 programs). The sum is the same loss; the
    gradients agree with the unchunked ones to fp32 rounding (tests/trainer/test_training_core.py).
    """

    def __init__(self, model: nn.Module, chunk: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.chunk = chunk
        wrapped: Any = model
        inner: Any = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
        self.decoder: Any = inner.get_decoder()
        self.head: Any = inner.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        positions: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1]).index_select(0, positions)
        if self.chunk is None or hidden.shape[0] <= self.chunk:
            return self._head_loss(hidden, targets)
        from torch.utils.checkpoint import checkpoint

        parts = [
            checkpoint(self._head_loss, hidden[i : i + self.chunk], targets[i : i + self.chunk], use_reentrant=False)
            for i in range(0, hidden.shape[0], self.chunk)
        ]
        return torch.stack(parts).sum()

    def _head_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        return nn.functional.cross_entropy(logits, targets, reduction="sum")


def compile_layers(loss_module: ProgramLoss) -> bool:
    """Regional ``torch.compile`` of the decoder layers (fused RMSNorm, RoPE, SiLU-gate, residual adds).

    The layers share one compiled graph (same code, parameters passed as inputs), so it compiles once for
    all of them, and ``dynamic=True`` keeps the batch and length dimensions symbolic: the varying bucket
    shapes of length bucketing do not recompile. False when the decoder has no ``layers`` list.
    """
    layers = getattr(loss_module.decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    for layer in layers:
        layer.compile(dynamic=True)
    return True


def uncompile_layers(loss_module: ProgramLoss) -> None:
    """Back to eager decoder layers (after a compile failure)."""
    for layer in getattr(loss_module.decoder, "layers", []):
        layer._compiled_call_impl = None


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: this process's CUDA device (LOCAL_RANK under torchrun) when present, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:  # "cuda": this process's device (set_device needs an index)
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def lora_targets(model: nn.Module) -> list[str]:
    """The LoRA target projections this model has (empty: LoRA cannot be applied)."""
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    return [t for t in LORA_TARGETS if t in names]


def load_model(
    job: JobCreate, base_path: Path, *, resume: ckpt.CheckpointInfo | None, device: torch.device
) -> nn.Module:
    """The base model (or the resumed full checkpoint), with a fresh or resumed LoRA adapter if asked."""
    from transformers import AutoModelForCausalLM

    source = resume.path if (resume is not None and not job.lora) else base_path
    try:
        with BUILD_LOCK:  # transformers patches process-wide functions while it loads (see BUILD_LOCK)
            model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise JobConfigError(f"cannot load model {job.model!r} from {source}: {exc}", param="model") from exc
    model.config.use_cache = False
    if job.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        targets = lora_targets(model)
        if not targets:
            kind = getattr(model.config, "model_type", type(model).__name__)
            raise JobConfigError(
                f"LoRA cannot be applied to model {job.model!r} (model_type {kind!r}): it has none of the "
                f"linear projections {', '.join(LORA_TARGETS)}; train it with lora=false",
                param="lora",
            )
        if resume is not None:
            model = PeftModel.from_pretrained(model, resume.path, is_trainable=True)
        else:
            config = LoraConfig(
                r=job.lora_r,
                lora_alpha=job.lora_alpha,
                lora_dropout=job.lora_dropout,
                target_modules=targets,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
    moved: nn.Module = model.to(device)
    return moved


def gradient_checkpointing(model: nn.Module, job: JobCreate, device: torch.device) -> bool:
    """Turn on activation recomputation when the job asks for it (default: on CPU, where a 135M model's kept
    activations of a micro-batch of 8 programs, ~3 GB in fp32, are more than its weights, gradients and AdamW
    state together). Non-reentrant checkpointing recomputes the same operations, so the gradients are the same
    bits. True when it is on."""
    wanted = job.gradient_checkpointing if job.gradient_checkpointing is not None else device.type == "cpu"
    if not wanted:
        return False
    newer = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
    if newer is not None:
        newer(activation_checkpointing_kwargs={"use_reentrant": False})
        return True
    older = getattr(model, "gradient_checkpointing_enable", None)
    if older is None:
        return False
    older(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def make_optimizer(model: nn.Module, job: JobCreate, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, fused on CUDA; no weight decay on biases and norms."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": job.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=job.learning_rate, betas=(0.9, 0.95), fused=fused)


def lr_at(job: JobCreate, step: int) -> float:
    """Linear warm-up to ``learning_rate``, then constant (``step`` counts from 1)."""
    if job.warmup_steps > 0 and step <= job.warmup_steps:
        return job.learning_rate * step / job.warmup_steps
    return job.learning_rate


# --- one optimizer step ----------------------------------------------------------------------------


@dataclass
class StepStats:
    loss: float
    tokens: int
    program_tokens: int
    seconds: float
    grad_norm: float


class StepRunner:
    """Runs optimizer steps on lists of examples (gradient accumulation, clipping, autocast)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        micro_batch_size: int,
        max_grad_norm: float,
        pad_id: int,
        distributed: bool = False,
        max_tokens: int | None = None,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.micro_batch_size = micro_batch_size
        self.max_grad_norm = max_grad_norm
        self.pad_id = pad_id
        self.max_tokens = max_tokens
        self.distributed = distributed
        self.rank, self.world = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        )
        vocab = getattr(getattr(model, "config", None), "vocab_size", 0) or 0
        self.program_loss = ProgramLoss(model, chunk=loss_chunk_positions(int(vocab), device))
        self.loss_module: nn.Module = self.program_loss
        self.compiled = compile and compile_layers(self.program_loss)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def _autocast(self) -> Any:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def step(self, examples: Sequence[Example], lr: float) -> StepStats:
        """One optimizer step on ``examples``; the loss is the mean over their program tokens.

        Distributed, ``examples`` is the global minibatch (the same on every rank): each rank trains on
        its :func:`shard` and the update is the one a single process would make on all of ``examples``.

        With compiled layers, a compile failure (no working Triton/C++ toolchain, an unsupported op) falls
        back to eager layers and redoes the step: nothing was applied yet but gradients, which are cleared.
        """
        if not self.compiled:
            return self._step(examples, lr)
        try:
            return self._step(examples, lr)
        except Exception as exc:  # any compiler error; the eager retry re-raises real ones
            if not _is_compile_error(exc):
                raise
            log.warning("torch.compile of the decoder layers failed (%s); training eagerly", exc)
            self.optimizer.zero_grad(set_to_none=True)
            uncompile_layers(self.program_loss)
            self.compiled = False
            return self._step(examples, lr)

    def _step(self, examples: Sequence[Example], lr: float) -> StepStats:
        start = time.perf_counter()
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mine = shard(examples, self.rank, self.world) if self.distributed else examples
        groups = bucket(mine, self.micro_batch_size, self.max_tokens)
        batches = [collate(mb, self.pad_id, self.device) for mb in groups]
        # The global minibatch's program tokens (every rank holds all of it, so no communication): the
        # step's loss is the mean over them. DDP averages gradients over the ranks, hence the factor world.
        total = program_tokens(examples)
        if total == 0:
            raise ValueError("no program tokens in this batch")
        scale = float(self.world) / total
        loss_sum = torch.zeros((), device=self.device)
        for i, mb in enumerate(batches):
            last = i == len(batches) - 1
            sync = getattr(self.loss_module, "no_sync", None)
            ctx = sync() if (sync is not None and not last) else nullcontext()
            with ctx:
                with self._autocast():
                    loss = self.loss_module(mb.input_ids, mb.attention_mask, mb.positions, mb.targets)
                (loss * scale).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(len(e.input_ids) for e in examples)  # of the global minibatch, like total
        if self.distributed:
            torch.distributed.all_reduce(loss_sum)  # report the loss of the whole (all-rank) minibatch
        mean = float(loss_sum.item()) / total
        return StepStats(
            loss=mean,
            tokens=tokens,
            program_tokens=total,
            seconds=time.perf_counter() - start,
            grad_norm=float(grad_norm),
        )


def _is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from torch.compile (dynamo/inductor/triton), not from the model or the data."""
    mods = " ".join(c.__module__ for c in type(exc).__mro__)
    return any(k in mods for k in ("torch._dynamo", "torch._inductor", "triton"))


# --- a whole job -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """How a job ended."""

    status: str
    step: int
    checkpoint: Path | None
    loss_history: list[LossPoint] = field(default_factory=list)
    resumed_from: int | None = None
    kind: str = "full"


def sample_seed(job: JobCreate, step: int) -> int:
    """The buffer seed of minibatch ``step``: the same on every attempt and for any number of processes."""
    base = job.sample.seed if job.sample.seed is not None else job.seed
    return (base * 1_000_003 + step) % (2**63 - 1)


def fetch_batch(buffer: BufferClient, job: JobCreate, step: int) -> list[SampledItem]:
    """Minibatch ``step`` (all ``batch_size`` items) from the buffer (PPER, Eq. 6-8)."""
    req = job.sample.model_copy(update={"n": job.batch_size, "seed": sample_seed(job, step)})
    try:
        resp = buffer.sample(req)
    except BTPError as exc:
        if exc.status >= 500:
            raise
        raise JobConfigError(f"the buffer cannot sample this job's minibatch: {exc.message}", param="sample") from exc
    if not resp.items:
        raise JobConfigError(
            "the buffer has no eligible experiences for this job's sample request "
            f"(population {resp.population}; dataset={job.sample.dataset!r}, split={job.sample.split!r}, "
            f"include_unjudged={job.sample.include_unjudged})",
            param="sample",
        )
    return resp.items


def shared_batch(buffer: BufferClient, job: JobCreate, step: int, distributed: bool) -> list[SampledItem]:
    """Minibatch ``step`` on every rank: rank 0 asks the buffer once and broadcasts the items (or its
    error, so that no rank waits forever on a broadcast that will not come).

    One draw, not one per rank: ranks asking with the same seed could still see different populations
    while the pipeline adds experiences, and their minibatches would no longer be one global minibatch.
    """
    if not distributed:
        return fetch_batch(buffer, job, step)
    rank = torch.distributed.get_rank()
    box: list[Any] = [None]
    error: Exception | None = None
    if rank == 0:
        try:
            box[0] = {"items": [it.model_dump(mode="json") for it in fetch_batch(buffer, job, step)]}
        except Exception as exc:  # re-raised below, after the other ranks have been told
            error = exc
            box[0] = {"error": str(getattr(exc, "message", exc)), "config": isinstance(exc, JobConfigError),
                      "param": getattr(exc, "param", None)}  # fmt: skip
    torch.distributed.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    got: dict[str, Any] = box[0]
    if "error" in got:
        if got["config"]:
            raise JobConfigError(got["error"], param=got["param"])
        raise RuntimeError(f"rank 0 could not fetch minibatch {step}: {got['error']}")
    return [SampledItem.model_validate(it) for it in got["items"]]


def _should_stop(cancel: Callable[[], bool] | None, distributed: bool, device: torch.device) -> bool:
    """Rank 0 asks ``cancel``; every rank gets its answer, so all stop at the same step."""
    local = bool(cancel()) if cancel is not None and (not distributed or torch.distributed.get_rank() == 0) else False
    if not distributed:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item() > 0)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def run_job(
    job: JobCreate,
    *,
    buffer: BufferClient,
    output_dir: Path,
    on_step: Callable[[LossPoint], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    device: str = "auto",
    data_dir: Path | None = None,
    keep_checkpoints: int = 0,
) -> TrainResult:
    """Run (or resume) ``job``; checkpoints go to ``output_dir/step-N``, TensorBoard to ``output_dir/tensorboard``.

    Returns with status ``succeeded`` or ``cancelled``; a bad configuration raises :class:`JobConfigError`.
    """
    tune_malloc()
    rank, world = _dist_info()
    distributed = world > 1
    if world > job.batch_size:
        raise JobConfigError(
            f"batch_size ({job.batch_size}) must be at least the number of processes ({world}): each trains "
            "on its share of the minibatch", param="batch_size",
        )
    dev = pick_device(device)
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
    main = rank == 0
    output_dir = Path(output_dir)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_partial(output_dir)
    if distributed:
        torch.distributed.barrier()

    base_path = model_dir(job.model, data_dir=data_dir or default_data_dir())
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except (OSError, ValueError) as exc:
        raise JobConfigError(f"no usable tokenizer in {base_path}: {exc}", param="model") from exc
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    fmt = resolve_format(job.prompt_format, instruct=is_instruct(base_path, tokenizer), tokenizer=tokenizer)

    resume = ckpt.latest_checkpoint(output_dir)
    torch.manual_seed(job.seed)
    model = load_model(job, base_path, resume=resume, device=dev)
    gradient_checkpointing(model, job, dev)
    optimizer = make_optimizer(model, job, dev)
    start_step = 0
    history: list[LossPoint] = []
    if resume is not None:
        state = ckpt.load_trainer_state(resume.path)
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        start_step = int(state["step"])
        history = [LossPoint.model_validate(p) for p in state.get("loss_history", [])]
        log.info("job resumes from %s (step %d)", resume.path, start_step)
        if on_resume is not None and main:
            on_resume(start_step)
    max_tokens = job.max_tokens_per_micro_batch
    if job.micro_batch_size is not None:
        micro = job.micro_batch_size
    elif max_tokens is not None:
        micro = job.batch_size
    elif dev.type == "cuda":
        # Neither set: cut micro-batches by a token budget sized from the GPU memory left after the
        # model and optimizer are resident (larger forward passes are most of the speed at these widths).
        free, _ = torch.cuda.mem_get_info(dev)
        max_tokens = auto_token_budget(getattr(model, "config", None), free)
        micro = job.batch_size
    else:
        micro = min(job.batch_size, DEFAULT_MICRO_BATCH)
    runner = StepRunner(
        model,
        optimizer,
        device=dev,
        micro_batch_size=min(micro, job.batch_size),
        max_grad_norm=job.max_grad_norm,
        pad_id=pad_id,
        distributed=distributed,
        max_tokens=max_tokens,
        compile=dev.type == "cuda",
    )
    kind = "lora" if job.lora else "full"
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=start_step + 1)

    def save(step: int) -> Path | None:
        if not main:
            return None
        to_save: Any = model
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "loss_history": [p.model_dump() for p in history],
            "job": job.model_dump(mode="json"),
        }
        meta = {"kind": kind, "base_model": str(base_path), "model": job.model, "prompt_format": fmt}
        path = ckpt.save_checkpoint(
            output_dir, step, model=to_save, tokenizer=tokenizer, trainer_state=state, meta=meta,
            keep=keep_checkpoints,
            # The generator reads whether a model is instruct from this marker of converted models.
            extra_files=(base_path / "btp_model.json",) if kind == "full" else (),
        )
        if on_checkpoint is not None:
            on_checkpoint(step, path)
        return path

    last_path: Path | None = resume.path if resume is not None else None
    status = "succeeded"
    step = start_step
    try:
        while step < job.steps:
            if _should_stop(cancel, distributed, dev):
                status = "cancelled"
                break
            step += 1
            items = shared_batch(buffer, job, step, distributed)
            examples = [tokenize(tokenizer, it.prompt, it.program, job.max_seq_len, fmt) for it in items]
            lr = lr_at(job, step)
            stats = runner.step(examples, lr)
            if not math.isfinite(stats.loss):
                raise FloatingPointError(f"loss is {stats.loss} at step {step}; lower the learning rate")
            tps = stats.tokens / stats.seconds if stats.seconds > 0 else None
            point = LossPoint(step=step, loss=stats.loss, tokens_per_s=tps, lr=lr, at=time.time(),
                              experience_ids=[it.experience_id for it in items],
                              weights_versions=[it.weights_version for it in items])  # fmt: skip
            history.append(point)
            if writer is not None:
                writer.add_scalar("train/loss", stats.loss, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/grad_norm", stats.grad_norm, step)
                if tps is not None:
                    writer.add_scalar("train/tokens_per_s", tps, step)
            if on_step is not None and main:
                on_step(point)
            if step % job.checkpoint_every == 0 or step == job.steps:
                last_path = save(step) or last_path
                if distributed:
                    torch.distributed.barrier()
        if status == "cancelled" and step > start_step:
            last_path = save(step) or last_path
    finally:
        if writer is not None:
            writer.close()
    return TrainResult(
        status=status, step=step, checkpoint=last_path, loss_history=history,
        resumed_from=start_step if resume is not None else None, kind=kind,
    )
