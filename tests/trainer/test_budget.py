"""The automatic micro-batch token budget (sized from free GPU memory)."""

from __future__ import annotations

from transformers import LlamaConfig, Qwen2Config

from services.trainer.data import auto_token_budget

GIB = 2**30

SMOL = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
QWEN = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24)


def test_budget_grows_with_free_memory_and_stays_in_bounds() -> None:
    budgets = [auto_token_budget(SMOL, g * GIB) for g in (1, 8, 40, 76, 130, 1000)]
    assert budgets == sorted(budgets)
    assert budgets[0] == 2048 and budgets[-1] == 65536
    assert all(b % 1024 == 0 for b in budgets)


def test_budget_is_smaller_for_the_larger_model() -> None:
    assert auto_token_budget(QWEN, 70 * GIB) < auto_token_budget(SMOL, 70 * GIB)


def test_budget_stays_under_the_measured_h100_footprint() -> None:
    # Measured (H100, bf16 autocast): SmolLM2 32k tokens peaked at 34.7 GiB, Qwen2 24k tokens at 55.5 GiB,
    # so on an 80 GB card (about 76 / 70 GiB free once weights and AdamW state are resident) the estimate
    # must stay at or below what was seen to fit.
    assert 16384 <= auto_token_budget(SMOL, 76 * GIB) <= 48 * 1024
    assert 8192 <= auto_token_budget(QWEN, 70 * GIB) <= 24 * 1024


def test_budget_without_a_config_uses_defaults() -> None:
    assert 2048 <= auto_token_budget(None, 40 * GIB) <= 65536
