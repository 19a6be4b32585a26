"""``stream: true`` on the OpenAI-compatible routes streams tokens as they are decoded: the official ``openai``
client over real HTTP (uvicorn on a free port; Starlette's TestClient buffers whole bodies) against the app
serving a tiny random Llama. Whether a chunk arrived before decoding finished is shown with a gate, not by
timing: decoding's next step waits until the client holds a token chunk, and records whether it did."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.generator.openai_stream import TextStream, pieces
from services.generator.trimming import trim

from .conftest import tiny_settings

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency (pip install -e '.[dev]')")

PROMPT = "def add(a, b):\n    \"\"\"Sum.\"\"\"\n"
GATE_S = 30.0


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    from services.generator.app import create_app
    from services.pipeline.cli.stack import free_port

    port = free_port()
    app = create_app(tiny_settings(tiny_dir, tmp_path_factory.mktemp("gen")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the generator did not start"
        time.sleep(0.2)
    yield url
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def oai(base_url: str) -> Any:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def name(base_url: str) -> str:
    return str(httpx.get(f"{base_url}/v1/models").json()["data"][0]["id"])


class Gate:
    """Wraps a decoding module's ``step`` (the forward pass for the next token): its first call waits until
    the client has received a token chunk, and records whether it had (True) or the wait timed out (False)."""

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.received, self.calls = step, threading.Event(), 0
        self.seen: list[bool] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.seen.append(self.received.wait(GATE_S))
        return self.step(*args, **kwargs)


@pytest.mark.parametrize("mode", ["sample", "greedy"])
def test_first_chunk_arrives_before_decoding_finishes(oai: Any, name: str, mode: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import services.generator.ancestral as ancestral
    import services.generator.beam as beam

    module: Any = ancestral if mode == "sample" else beam
    gate = Gate(module.step)
    monkeypatch.setattr(module, "step", gate)
    knobs: dict[str, Any] = {"temperature": 0.9, "seed": 5} if mode == "sample" else {"temperature": 0}
    # logprobs 0: every token is a chunk, even one whose text waits for the rest of a character
    stream = oai.completions.create(model=name, prompt=PROMPT, max_tokens=12, logprobs=0, stream=True, **knobs)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].logprobs is not None:
            gate.received.set()  # decoding waits for this at its second token
    assert gate.seen == [True], "no token reached the client while decoding was held"
    monkeypatch.undo()
    full = oai.completions.create(model=name, prompt=PROMPT, max_tokens=12, logprobs=0, **knobs)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert [c.choices[0].logprobs.token_logprobs[0] for c in chunks if c.choices and c.choices[0].logprobs] \
        == pytest.approx(full.choices[0].logprobs.token_logprobs, abs=1e-6)


def test_chat_streams_while_decoding(oai: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.generator.ancestral as ancestral

    gate = Gate(ancestral.step)
    monkeypatch.setattr(ancestral, "step", gate)
    msgs = [{"role": "user", "content": "Write a function."}]
    chunks = []
    for chunk in oai.chat.completions.create(model=name, messages=msgs, max_tokens=10, temperature=1.0, seed=3,
                                             logprobs=True, stream=True):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].logprobs is not None:
            gate.received.set()
    assert gate.seen == [True]
    monkeypatch.undo()
    full = oai.chat.completions.create(model=name, messages=msgs, max_tokens=10, temperature=1.0, seed=3, logprobs=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert [c.choices[0].logprobs.content[0].logprob for c in chunks if c.choices and c.choices[0].logprobs] \
        == pytest.approx([t.logprob for t in full.choices[0].logprobs.content], abs=1e-6)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def _joined(chunks: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            out[ch.index] = out.get(ch.index, "") + ch.text
    return out


def _finish(chunks: list[Any]) -> dict[int, str]:
    return {ch.index: ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason}


def test_stream_equals_the_non_streamed_answer_with_stop_sequences(oai: Any, name: str) -> None:
    knobs: dict[str, Any] = {"model": name, "prompt": PROMPT, "max_tokens": 24, "temperature": 1.0, "seed": 11}
    plain = oai.completions.create(**knobs).choices[0].text
    assert len(plain) >= 6, plain
    # stops taken from the answer itself (so they are hit): two characters, and a longer one that is held back
    for stop in ([plain[3:5]], [plain[len(plain) // 2:len(plain) // 2 + 4], "\u00e9\u00e9"]):
        full = oai.completions.create(**knobs, stop=stop)
        chunks = list(oai.completions.create(**knobs, stop=stop, stream=True, stream_options={"include_usage": True}))
        assert _joined(chunks) == {0: full.choices[0].text}, stop
        assert _finish(chunks) == {0: full.choices[0].finish_reason} == {0: "stop"}
        assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_n_choices_stream_the_same_samples(oai: Any, name: str) -> None:
    knobs: dict[str, Any] = {"model": name, "prompt": [PROMPT, "x = "], "max_tokens": 8, "temperature": 1.0,
                             "seed": 4, "n": 3}
    full = oai.completions.create(**knobs)
    chunks = list(oai.completions.create(**knobs, stream=True))
    streamed = _joined(chunks)
    for p in range(2):  # per prompt the same samples; streamed in draw order, returned most probable first
        assert sorted(streamed[i] for i in range(3 * p, 3 * p + 3)) == sorted(c.text for c in full.choices[3 * p:3 * p + 3])
    greedy = {"model": name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "n": 2}
    assert _joined(list(oai.completions.create(**greedy, stream=True))) == \
        {i: c.text for i, c in enumerate(oai.completions.create(**greedy).choices)}


def test_beam_search_streams_its_final_beams(oai: Any, name: str) -> None:
    knobs: dict[str, Any] = {"model": name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "n": 2,
                             "extra_body": {"use_beam_search": True, "best_of": 3}}
    full = oai.completions.create(**knobs)
    assert _joined(list(oai.completions.create(**knobs, stream=True))) == {c.index: c.text for c in full.choices}


def test_best_of_above_n_cannot_stream(base_url: str, name: str) -> None:
    r = httpx.post(f"{base_url}/v1/completions", json={"model": name, "prompt": "a", "max_tokens": 2, "n": 1,
                                                        "best_of": 2, "temperature": 1, "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and "best_of" in r.json()["error"]["message"]


def test_text_stream_never_sends_what_the_final_cut_removes(smol_tokenizer: Any) -> None:
    """Multi-byte characters split over tokens and a stop sequence: every released prefix is a prefix of
    the trimmed text, no piece carries half a character, and the pieces join to exactly the trimmed text."""
    tok = smol_tokenizer
    text = "na\u00efve \U0001f642 caf\u00e9\n\n\ndef f():\n    return 1\n"
    ids = tok.encode(text, add_special_tokens=False)
    for stop in (["\ndef"], ["f\u00e9\n"], ["\U0001f642"], ["never"]):
        s = TextStream(tok, set(), stop)
        sent = []
        for t in ids:
            for _, _, piece in s.add(t, -0.5):
                assert "\ufffd" not in piece
                sent.append(piece)
        rest, reason, count = s.finish()
        final = trim(tok, ids, [-0.5] * len(ids), finished=False, eos_token_ids=set(), stop=stop)
        assert final.text.startswith("".join(sent)), stop
        assert "".join(sent) + "".join(p for _, _, p in rest) == final.text
        assert count == len(final.token_ids) and reason == final.finish_reason
    assert "".join(pieces(tok, ids)) == text
