"""Examples and micro-batches: prompt X + program t as token ids, and which positions carry loss.

Only the positions whose next token is a program token are scored (the loss is on the program only).
Length bucketing sorts an optimizer step's examples by length before cutting micro-batches, so padding
is only the length spread inside one micro-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from services.common.prompts import encode_example


@dataclass(frozen=True)
class Example:
    """Token ids of prompt + program; positions ``n_prompt-1 .. len-2`` predict program tokens."""

    input_ids: tuple[int, ...]
    n_prompt: int

    def loss_positions(self) -> range:
        """Positions whose logits are scored (each predicts the token after it)."""
        return range(self.n_prompt - 1, len(self.input_ids) - 1)


def make_example(prompt_ids: Sequence[int], program_ids: Sequence[int], max_seq_len: int) -> Example:
    """Join prompt and program, cutting the prompt from the left (then the program's end) to fit."""
    program = list(program_ids)[: max_seq_len - 1]
    if not program:
        raise ValueError("empty program")
    room = max_seq_len - len(program)
    prompt = list(prompt_ids)[-room:] if room > 0 else []
    if not prompt:
        # A position is needed before the first program token to predict it.
        prompt, program = program[:1], program[1:]
        if not program:
            raise ValueError("program too short to train on")
    return Example(tuple(prompt + program), len(prompt))


def tokenize(tokenizer: Any, prompt: str, program: str, max_seq_len: int, fmt: str = "raw") -> Example:
    """Prompt X and program t laid out exactly as the generator conditions on them
    (:func:`services.common.prompts.encode_example`); the target ends with EOS."""
    prompt_ids, program_ids = encode_example(tokenizer, prompt, program, fmt)
    return make_example(prompt_ids, program_ids, max_seq_len)


def bucket(
    examples: Sequence[Example], micro_batch_size: int, max_tokens: int | None = None
) -> list[list[Example]]:
    """Sort by length and cut into micro-batches of at most ``micro_batch_size`` examples and (when set)
    ``max_tokens`` padded tokens: padding is only the spread within one micro-batch."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    batches: list[list[Example]] = []
    current: list[Example] = []
    for ex in ordered:
        longest = len(ex.input_ids)  # ascending order: the newcomer is the longest
        too_many = len(current) >= micro_batch_size
        too_big = max_tokens is not None and current and (len(current) + 1) * longest > max_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(ex)
    if current:
        batches.append(current)
    return batches


@dataclass
class MicroBatch:
    """Padded ids plus the flat indices (into B*L) of the scored positions and their target tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    positions: torch.Tensor
    targets: torch.Tensor
    tokens: int
    program_tokens: int


def collate(
    examples: Sequence[Example], pad_id: int, device: torch.device, *, with_mask: bool = False
) -> MicroBatch:
    """Right-pad to the longest example.

    No attention mask by default: with right padding and causal attention no real token ever attends to
    a pad (pads come after it), and pad positions are never scored, so the mask changes nothing we use
    while its absence lets SDPA take the fused causal (flash) kernel instead of a masked one.
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    positions: list[int] = []
    targets: list[int] = []
    for row, ex in enumerate(examples):
        ids[row, : len(ex.input_ids)] = torch.tensor(ex.input_ids, dtype=torch.long)
        mask[row, : len(ex.input_ids)] = 1
        for pos in ex.loss_positions():
            positions.append(row * width + pos)
            targets.append(ex.input_ids[pos + 1])
    padded = bool((mask == 0).any())
    return MicroBatch(
        input_ids=ids.to(device, non_blocking=True),
        attention_mask=mask.to(device, non_blocking=True) if (padded and with_mask) else None,
        positions=torch.tensor(positions, dtype=torch.long).to(device, non_blocking=True),
        targets=torch.tensor(targets, dtype=torch.long).to(device, non_blocking=True),
        tokens=sum(len(e.input_ids) for e in examples),
        program_tokens=len(targets),
    )


def auto_token_budget(
    config: Any, free_bytes: int, *, fraction: float = 0.7, lo: int = 2048, hi: int = 65536
) -> int:
    """A padded-token budget per forward pass that fits in ``fraction`` of ``free_bytes`` of GPU memory.

    Activation bytes per token, fitted to bf16-autocast measurements on an H100 (SmolLM2-135M: 32k tokens
    in 34.7 GiB; Qwen2-0.5B: 24k tokens in 55.5 GiB, both with fp32 weights and AdamW state resident):
    about ``layers * (28 * hidden + 12.3 * intermediate)`` for the decoder, plus the LM head's logits,
    their bf16 copy and gradient for the scored (program) positions, taken here as half of all tokens.
    Rounded down to a multiple of 1024 and kept within ``[lo, hi]``.
    """
    layers = int(getattr(config, "num_hidden_layers", 1))
    hidden = int(getattr(config, "hidden_size", 1024))
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    vocab = int(getattr(config, "vocab_size", 32000))
    per_token = layers * (28 * hidden + 12.3 * inter) + 0.5 * vocab * 10
    budget = int(free_bytes * fraction / per_token) // 1024 * 1024
    return max(lo, min(hi, budget))


def shard(examples: Sequence[Example], rank: int, world: int) -> list[Example]:
    """Rank ``rank``'s share of a global minibatch: sorted by length, then dealt round-robin.

    Every rank holds the whole minibatch (the one a single process would train on) and takes every
    ``world``-th example of the length order, so the ranks get nearly equal token counts and together
    exactly the global minibatch. ``world`` must not exceed the number of examples: DDP needs every rank
    to run a forward and backward pass.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    if len(examples) < world:
        raise ValueError(f"{len(examples)} examples cannot be shared by {world} processes")
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    return [examples[i] for i in order[rank::world]]


def program_tokens(examples: Sequence[Example]) -> int:
    """Scored (program) positions of ``examples``: the token count the step's loss is a mean over."""
    return sum(len(e.loss_positions()) for e in examples)
