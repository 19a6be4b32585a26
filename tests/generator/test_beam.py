"""The reference beam search against transformers' generate, and every log-probability against a
teacher-forced recomputation (tiny random Llama, CPU fp32, no tokenizer needed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from services.generator.ancestral import sample
from services.generator.beam import beam_search

from .conftest import teacher_forced, tiny_config

PROMPTS = [[1, 5, 9, 22], [1, 40], [1, 7, 7, 7, 8, 11, 12, 13, 14], [1, 60, 61], [1, 3, 4, 5, 6]]


@pytest.fixture(scope="module")
def small_model() -> Any:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config(96, initializer_range=0.3, eos_token_id=3, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def hf_beams(model: Any, prompt: list[int], k: int, max_new: int, eos: list[int]) -> list[list[int]]:
    out = model.generate(
        torch.tensor([prompt]), num_beams=k, num_return_sequences=k, do_sample=False, length_penalty=0.0,
        max_new_tokens=max_new, eos_token_id=eos, pad_token_id=0,
    )
    seqs = []
    for row in out.tolist():
        gen = row[len(prompt):]
        cut = next((i for i, t in enumerate(gen) if t in eos), None)
        seqs.append(gen if cut is None else gen[: cut + 1])
    return seqs


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("eos", [[3], [3, 17]])
def test_beam_equals_transformers_generate(small_model: Any, k: int, eos: list[int]) -> None:
    ours = beam_search(small_model, PROMPTS, num_beams=k, max_new_tokens=14, eos_token_ids=set(eos), pad_token_id=0)
    finished = 0
    for prompt, beams in zip(PROMPTS, ours, strict=True):
        assert [b.token_ids for b in beams] == hf_beams(small_model, prompt, k, 14, eos)
        assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
        for b in beams:
            assert b.finished == (b.token_ids[-1] in eos)
            finished += b.finished
    if k > 1:
        assert finished > 0, "the test model should end some beams on EOS"


def test_beam_logprobs_are_teacher_forced(small_model: Any) -> None:
    ours = beam_search(small_model, PROMPTS, num_beams=3, max_new_tokens=10, eos_token_ids={3}, pad_token_id=0)
    for prompt, beams in zip(PROMPTS, ours, strict=True):
        assert len(beams) == 3
        for b in beams:
            ref = teacher_forced(small_model, prompt, b.token_ids)
            assert b.token_logprobs == pytest.approx(ref, abs=1e-4)
            assert sum(b.token_logprobs) == pytest.approx(sum(ref), abs=1e-3)


def test_greedy_is_one_beam(small_model: Any) -> None:
    ours = beam_search(small_model, PROMPTS, num_beams=1, max_new_tokens=12, eos_token_ids={3}, pad_token_id=0)
    for prompt, beams in zip(PROMPTS, ours, strict=True):
        out = small_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, eos_token_id=3,
                                   pad_token_id=0)
        gen = out[0, len(prompt):].tolist()
        assert beams[0].token_ids == gen[: gen.index(3) + 1] if 3 in gen else gen


def test_sample_logprobs_and_seed(small_model: Any) -> None:
    kw: dict[str, Any] = dict(num_return_sequences=4, max_new_tokens=10, eos_token_ids={3}, pad_token_id=0,
                              temperature=1.3, top_p=0.9)
    a = sample(small_model, PROMPTS, seeds=[11, 12, 13, 14, 15], **kw)
    b = sample(small_model, PROMPTS[:2], seeds=[11, 12], **kw)  # another batch: same draws per prompt
    c = sample(small_model, PROMPTS[:2], seeds=[99, 98], **kw)
    assert [[x.token_ids for x in g] for g in a[:2]] == [[x.token_ids for x in g] for g in b]
    assert [[x.token_ids for x in g] for g in c] != [[x.token_ids for x in g] for g in b]
    for prompt, group in zip(PROMPTS, a, strict=True):
        assert [x.score for x in group] == sorted((x.score for x in group), reverse=True)
        for x in group:
            ref = teacher_forced(small_model, prompt, x.token_ids)
            assert sum(x.token_logprobs) == pytest.approx(sum(ref), abs=1e-3)


def test_beam_rejects_bad_arguments(small_model: Any) -> None:
    with pytest.raises(ValueError):
        beam_search(small_model, [[1]], num_beams=0, max_new_tokens=3, eos_token_ids={3}, pad_token_id=0)
    with pytest.raises(ValueError):
        beam_search(small_model, [[]], num_beams=2, max_new_tokens=3, eos_token_ids={3}, pad_token_id=0)
    with pytest.raises(ValueError):
        beam_search(small_model, [[1]], num_beams=2, max_new_tokens=3, eos_token_ids={3}, pad_token_id=0, stop=["x"])
    assert beam_search(small_model, [], num_beams=2, max_new_tokens=3, eos_token_ids={3}, pad_token_id=0) == []
