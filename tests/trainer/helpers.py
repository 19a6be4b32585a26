"""Builders shared by the trainer tests: a tiny tokenizer and tiny random models saved as HF folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE_SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "def mul(a, b):\n    return a * b\n",
    "def is_even(n):\n    return n % 2 == 0\n",
    "def first(xs):\n    return xs[0] if xs else None\n",
    '"""Return the sum of two numbers."""\n',
    "for i in range(10):\n    print(i)\n",
    "while x > 0:\n    x -= 1\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
]


def build_tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer (about 400 tokens) trained on a few code lines, saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CODE_SAMPLES * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    fast.save_pretrained(folder)


def build_tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer random Llama with the tiny tokenizer, saved as a HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def build_tiny_gpt2(folder: Path) -> Path:
    """A random 1-layer GPT-2 (Conv1D projections: no LoRA targets of ours)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=256)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


PROGRAMS = [
    ("# add two numbers\n", "def add(a, b):\n    return a + b\n", 1.0),
    ("# subtract\n", "def sub(a, b):\n    return a - b\n", 0.5),
    ("# even?\n", "def is_even(n):\n    return n % 2 == 0\n", 1.0),
    ("# a stack\n", "class Stack:\n    def __init__(self):\n        self.items = []\n", 0.0),
]


def fill_buffer(buffer: object, dataset: str = "toy") -> None:
    """Four tasks with one judged experience each, through the buffer's own API."""
    from services.common.client import BufferClient
    from services.common.schemas.buffer import ExperienceIn, TaskIn

    assert isinstance(buffer, BufferClient)
    tasks = [
        TaskIn.model_validate(
            {
                "id": f"{dataset}/{i}",
                "dataset": dataset,
                "split": "train",
                "prompt": prompt,
                "tests": {"kind": "check", "entry_point": "f", "code": "def check(candidate):\n    assert True\n"},
            }
        )
        for i, (prompt, _, _) in enumerate(PROGRAMS)
    ]
    buffer.upsert_tasks(tasks)
    items = [
        ExperienceIn(
            task_id=f"{dataset}/{i}", program=program, logprob=-5.0 - i, token_count=10, source="test@0",
            pass_rate=rate,
        )
        for i, (_, program, rate) in enumerate(PROGRAMS)
    ]
    buffer.add_experiences(items)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def buffer_service(pg_url: str, data_dir: Path, log: Path) -> Iterator[str]:
    """The buffer service (uvicorn on its factory) on a free port: the worker talks to it over HTTP."""
    from services.pipeline.cli.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTP_")}
    env.update(PYTHONPATH=str(ROOT), BTP_DATABASE_URL=pg_url, BTP_DATA_DIR=str(data_dir), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "uvicorn", "services.buffer.app:create_app", "--factory", "--port", str(port)]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        from services.common.client import BufferClient

        with BufferClient(url) as client:
            client.wait_until_healthy(timeout=60)
        assert proc.poll() is None, log.read_text()[-4000:]
        yield url
    finally:
        _stop(proc)
