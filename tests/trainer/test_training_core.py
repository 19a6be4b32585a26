"""Unit tests of the training core: loss masking, bucketing, steps that learn, LoRA, checkpoints."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from services.common.schemas.trainer import JobCreate
from services.trainer import checkpoint as ckpt
from services.trainer.training import (
    Example,
    JobConfigError,
    ProgramLoss,
    StepRunner,
    bucket,
    collate,
    load_model,
    make_example,
    make_optimizer,
    tokenize,
)

CPU = torch.device("cpu")


def _examples(tokenizer: object, n: int = 8) -> list[Example]:
    pairs = [
        ("# add two numbers\n", "def add(a, b):\n    return a + b\n"),
        ("# subtract\n", "def sub(a, b):\n    return a - b\n"),
        ("# even?\n", "def is_even(n):\n    return n % 2 == 0\n"),
        ("# a stack class with a list of items\n", "class Stack:\n    def __init__(self):\n        self.items = []\n"),
    ]
    return [tokenize(tokenizer, p, t, 128) for p, t in (pairs * n)[:n]]


def test_loss_positions_are_exactly_the_program_tokens() -> None:
    ex = make_example([5, 6, 7], [8, 9], max_seq_len=64)
    assert ex.input_ids == (5, 6, 7, 8, 9)
    # Position 2 (token 7) predicts 8, position 3 predicts 9; nothing else is scored.
    assert list(ex.loss_positions()) == [2, 3]
    other = make_example([1], [2, 3, 4], max_seq_len=64)
    mb = collate([ex, other], pad_id=0, device=CPU, with_mask=True)
    width = mb.input_ids.shape[1]
    assert width == 5
    assert mb.positions.tolist() == [2, 3, width + 0, width + 1, width + 2]
    assert mb.targets.tolist() == [8, 9, 2, 3, 4]
    assert mb.attention_mask is not None and mb.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 1, 0]]


def test_truncation_keeps_the_program() -> None:
    ex = make_example(list(range(100, 150)), [1, 2, 3], max_seq_len=10)
    assert len(ex.input_ids) == 10 and ex.input_ids[-3:] == (1, 2, 3)
    assert ex.input_ids[:7] == tuple(range(143, 150))
    long_prog = make_example([7], list(range(20)), max_seq_len=8)
    assert len(long_prog.input_ids) == 8 and long_prog.n_prompt == 1


def test_tokenize_scores_program_and_eos_only(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    prompt, program = "# add two numbers\n", "def add(a, b):\n    return a + b\n"
    ex = tokenize(tok, prompt, program, 256)
    scored = [ex.input_ids[p + 1] for p in ex.loss_positions()]
    prog_ids = tok(program, add_special_tokens=False)["input_ids"]
    assert scored == [*prog_ids, tok.eos_token_id]
    assert tok.decode(list(ex.input_ids[: ex.n_prompt])).endswith(prompt)


def test_chat_format_matches_the_generator_prompt(tiny_llama: Path, tmp_path: Path) -> None:
    """chat: the prompt is exactly the generator's encode_prompt; the target is program + fence + EOS."""
    from transformers import AutoTokenizer

    from services.common.prompts import encode_prompt, resolve_format
    from services.models import is_instruct

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert resolve_format("auto", instruct=is_instruct(tiny_llama, tok), tokenizer=tok) == "raw"  # no chat template
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    assert resolve_format("auto", instruct=is_instruct(tmp_path, tok), tokenizer=tok) == "chat"
    prompt, program = "Add two numbers.", "def add(a, b):\n    return a + b"
    ex = tokenize(tok, prompt, program, 512, "chat")
    assert list(ex.input_ids[: ex.n_prompt]) == encode_prompt(tok, prompt, "chat")
    scored = [ex.input_ids[p + 1] for p in ex.loss_positions()]
    assert scored[-1] == tok.eos_token_id
    assert tok.decode(scored[:-1]) == program + "\n```"


def test_program_loss_matches_hf_masked_loss(tiny_llama: Path) -> None:
    """Our head-on-scored-positions loss equals HF's loss with labels -100 on prompt and padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    examples = _examples(tok, 4)
    mb = collate(examples, tok.pad_token_id, CPU)
    assert mb.attention_mask is None  # right padding + causal attention: pads never reach scored positions
    ours = ProgramLoss(model)(mb.input_ids, None, mb.positions, mb.targets) / mb.program_tokens
    masked = collate(examples, tok.pad_token_id, CPU, with_mask=True)
    assert masked.attention_mask is not None and bool((masked.attention_mask == 0).any())
    labels = torch.full_like(mb.input_ids, -100)
    for row, ex in enumerate(examples):
        for pos in ex.loss_positions():
            labels[row, pos + 1] = ex.input_ids[pos + 1]
    ref = model(input_ids=mb.input_ids, attention_mask=masked.attention_mask, labels=labels).loss
    assert torch.allclose(ours, ref, atol=1e-5), (ours.item(), ref.item())
    # Changing a prompt's tokens changes nothing but the context, never which positions are scored.
    assert int((labels != -100).sum()) == mb.program_tokens


def test_chunked_program_loss_equals_the_whole_one(tiny_llama: Path) -> None:
    """The CPU's chunked head + cross-entropy (one chunk's logits at a time, recomputed in backward) gives
    the same loss and the same gradients as the head over every scored position at once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.trainer.training import loss_chunk_positions

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    mb = collate(_examples(tok, 4), tok.pad_token_id, CPU)
    results = []
    for chunk in (None, 7):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
        loss_module = ProgramLoss(model, chunk=chunk)
        loss = loss_module(mb.input_ids, None, mb.positions, mb.targets)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert mb.positions.numel() > 3 * 7  # several chunks, the last one partial
    (whole, g_whole), (chunked, g_chunked) = results
    assert torch.allclose(whole, chunked, rtol=1e-6), (whole.item(), chunked.item())
    assert g_whole.keys() == g_chunked.keys() and g_whole
    for name, grad in g_whole.items():
        assert torch.allclose(grad, g_chunked[name], rtol=1e-4, atol=1e-6), name
    # on a CPU the runner chunks by a logits budget; the GPU keeps the one fused head matmul
    assert loss_chunk_positions(49152, CPU) == 341 and loss_chunk_positions(49152, torch.device("cuda")) is None
    assert loss_chunk_positions(10_000_000, CPU) == 64


def test_bucketing_cuts_padding() -> None:
    rng = random.Random(0)
    examples = [make_example([1] * rng.randint(5, 200), [2] * rng.randint(5, 100), 512) for _ in range(64)]
    def padded(batches: list[list[Example]]) -> int:
        return sum(max(len(e.input_ids) for e in b) * len(b) for b in batches)
    real = sum(len(e.input_ids) for e in examples)
    naive = [examples[i : i + 8] for i in range(0, 64, 8)]
    assert padded(bucket(examples, 8)) < 0.5 * (padded(naive) - real) + real
    assert sorted(e.input_ids for b in bucket(examples, 8) for e in b) == sorted(e.input_ids for e in examples)


def test_token_budget_bucketing() -> None:
    examples = [make_example([1] * n, [2] * 4, 512) for n in (4, 10, 20, 30, 60, 100, 200)]
    groups = bucket(examples, micro_batch_size=64, max_tokens=128)
    for g in groups:
        assert len(g) == 1 or len(g) * max(len(e.input_ids) for e in g) <= 128
    assert sum(len(g) for g in groups) == len(examples)
    assert [len(g) for g in bucket(examples, micro_batch_size=2)] == [2, 2, 2, 1]


def _runner(model: torch.nn.Module, job: JobCreate, pad: int, micro: int = 4) -> StepRunner:
    return StepRunner(
        model, make_optimizer(model, job, CPU), device=CPU, micro_batch_size=micro,
        max_grad_norm=job.max_grad_norm, pad_id=pad,
    )


def test_full_steps_change_parameters_and_loss_falls(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    job = JobCreate(model=str(tiny_llama), learning_rate=3e-3, batch_size=8)
    model = load_model(job, tiny_llama, resume=None, device=CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    runner = _runner(model, job, tok.pad_token_id)
    batch = _examples(tok, 8)
    losses = [runner.step(batch, job.learning_rate).loss for _ in range(25)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_accumulation_split_does_not_change_the_step(tiny_llama: Path) -> None:
    """One micro-batch of 8 or four of 2: the same token-mean loss and the same update."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    job = JobCreate(model=str(tiny_llama), learning_rate=1e-3, batch_size=8)
    batch = _examples(tok, 8)
    results = []
    for micro in (8, 2):
        model = load_model(job, tiny_llama, resume=None, device=CPU)
        stats = _runner(model, job, tok.pad_token_id, micro=micro).step(batch, job.learning_rate)
        results.append((stats.loss, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_lora_trains_only_the_adapter(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    job = JobCreate(model=str(tiny_llama), learning_rate=1e-2, batch_size=8, lora=True, lora_r=4)
    model = load_model(job, tiny_llama, resume=None, device=CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    runner = _runner(model, job, tok.pad_token_id)
    losses = [runner.step(_examples(tok, 8), job.learning_rate).loss for _ in range(15)]
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == ("lora_B" in name or ("lora_A" in name)), name


def test_lora_on_a_model_without_targets_is_a_clear_error(tiny_gpt2: Path) -> None:
    job = JobCreate(model=str(tiny_gpt2), lora=True)
    with pytest.raises(JobConfigError, match="LoRA cannot be applied"):
        load_model(job, tiny_gpt2, resume=None, device=CPU)


def test_checkpoint_is_atomic_and_partial_folders_are_ignored(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    root = tmp_path / "job"
    ckpt.save_checkpoint(root, 3, model=model, tokenizer=None, trainer_state={"step": 3}, meta={"kind": "full"})
    # A writer killed half-way leaves a hidden temporary folder and no step-N.
    partial = root / ".tmp-step-6-deadbeef"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    # A step folder without its state file is not a checkpoint either.
    (root / "step-9").mkdir()
    latest = ckpt.latest_checkpoint(root)
    assert latest is not None and latest.step == 3
    assert ckpt.load_trainer_state(latest.path)["step"] == 3
    assert ckpt.remove_partial(root) == [partial] and not partial.exists()
    AutoModelForCausalLM.from_pretrained(latest.path)
    assert not any(p.name.startswith(".tmp") for p in root.iterdir())


def test_gradient_checkpointing_is_exact_and_keeps_less(tiny_llama: Path) -> None:
    """On CPU jobs recompute activations by default: the same parameters bit for bit after three steps, and the
    forward pass keeps a fraction of the activations for the backward pass."""
    from transformers import AutoTokenizer

    from services.trainer.training import gradient_checkpointing

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    job = JobCreate(model=str(tiny_llama), learning_rate=1e-3, batch_size=8)
    batch = _examples(tok, 8)
    params, kept = [], []
    for flag in (False, None):  # off, then the CPU default
        torch.manual_seed(0)
        model = load_model(job, tiny_llama, resume=None, device=CPU)
        on = gradient_checkpointing(model, job.model_copy(update={"gradient_checkpointing": flag}), CPU)
        assert on is (flag is None)
        runner = _runner(model, job, tok.pad_token_id, micro=8)
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        mb = collate(batch, tok.pad_token_id, CPU)
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            runner.loss_module(mb.input_ids, mb.attention_mask, mb.positions, mb.targets)
        kept.append(sum(saved))
        for _ in range(3):
            runner.step(batch, job.learning_rate)
        params.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)
    assert kept[1] < 0.5 * kept[0], kept
    assert not gradient_checkpointing(load_model(job, tiny_llama, resume=None, device=CPU), job,
                                      torch.device("cuda"))  # GPUs keep activations unless the job asks
