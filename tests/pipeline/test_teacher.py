"""Teacher sources that need no model: fenced-code extraction and the JSONL file of programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ValidationError
from services.pipeline.datasets.loaders import load_mbpp, select
from services.pipeline.run.samplers import JsonlSampler, extract_code


def test_extract_code_takes_the_first_fence() -> None:
    answer = "Here:\n```python\ndef f():\n    return 1\n```\nand\n```\nother\n```"
    assert extract_code(answer) == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n") == "x = 1\n"  # unclosed fence (cut at max tokens)
    assert extract_code("no fence") == "no fence"


def test_jsonl_sampler_orders_by_logprob_and_limits_k(tmp_path: Path) -> None:
    tasks = select(load_mbpp().tasks, "train", 2)
    path = tmp_path / "t.jsonl"
    path.write_text(
        "\n".join([
            f'{{"task_id": "{tasks[0].id}", "program": "a", "logprob": -5}}',
            f'{{"task_id": "{tasks[0].id}", "program": "b", "logprob": -1, "token_count": 3}}',
            f'{{"task_id": "{tasks[0].id}", "program": "c", "logprob": -9}}',
            "",
        ])
    )  # fmt: skip
    sampler = JsonlSampler(path)
    out = sampler.sample(tasks, 2)
    assert [c.text for c in out[0]] == ["b", "a"] and out[0][0].token_count == 3
    assert out[1] == [] and sampler.source == "jsonl:t.jsonl"


def test_jsonl_sampler_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_id": "x", "program": "p"}\n{"task_id": "y"}\n')
    with pytest.raises(ValidationError, match=r"bad\.jsonl:2"):
        JsonlSampler(path)
