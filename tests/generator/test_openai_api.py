"""The OpenAI-compatible routes, through the official ``openai`` client and as raw HTTP, on the real app
(TestClient on create_app) with a tiny random Llama and the SmolLM2 tokenizer (which has a chat template)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from .conftest import teacher_forced, tiny_settings

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency (pip install -e '.[dev]')")

PROMPT = "def add(a, b):\n    \"\"\"Sum.\"\"\"\n"


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()


@pytest.fixture
def oai(tiny_client: Any) -> Any:
    """The official client over the app's TestClient (an httpx.Client)."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=tiny_client, max_retries=0)


def model_id(client: Any) -> str:
    return str(client.get("/v1/models").json()["data"][0]["id"])


def test_models_lists_the_served_model(oai: Any, tiny_dir: Path) -> None:
    models = oai.models.list()
    assert [m.id for m in models.data] == [tiny_dir.name]
    assert models.data[0].object == "model" and models.data[0].owned_by == "btp"


def test_completion_logprobs_equal_the_native_endpoint(oai: Any, tiny_client: Any, tiny_model: Any) -> None:
    name = model_id(tiny_client)
    comp = oai.completions.create(model=name, prompt=PROMPT, max_tokens=10, temperature=0, logprobs=3, stop=["\n\n"])
    native = tiny_client.post("/v1/generate", json={"prompts": [PROMPT], "mode": "greedy", "max_new_tokens": 10,
                                                    "prompt_format": "raw", "stop": ["\n\n"], "token_logprobs": True})
    cand = native.json()["results"][0]["candidates"][0]
    choice = comp.choices[0]
    assert choice.text == cand["text"] and choice.finish_reason == cand["finish_reason"]
    assert choice.logprobs.token_logprobs == cand["token_logprobs"]
    assert math.fsum(choice.logprobs.token_logprobs) == pytest.approx(cand["logprob"], abs=1e-9)
    assert "".join(choice.logprobs.tokens) == choice.text
    # the alternatives are the teacher-forced top 3 at each position, and the chosen token is among them
    # (a greedy choice is the most likely token)
    ref = teacher_forced(tiny_model, native.json()["results"][0]["prompt_token_ids"], cand["token_ids"])
    for lp, alts, r in zip(choice.logprobs.token_logprobs, choice.logprobs.top_logprobs, ref, strict=True):
        assert lp == pytest.approx(r, abs=1e-3) and len(alts) == 3
        assert max(alts.values()) == pytest.approx(lp, abs=1e-3)
    assert comp.usage.completion_tokens == len(cand["token_ids"])
    assert comp.usage.prompt_tokens == len(native.json()["results"][0]["prompt_token_ids"])
    assert comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens


def test_beam_search_extension_equals_native_beams(oai: Any, tiny_client: Any) -> None:
    name = model_id(tiny_client)
    comp = oai.completions.create(model=name, prompt=[PROMPT, "x = "], max_tokens=8, n=3, logprobs=0,
                                  extra_body={"use_beam_search": True, "best_of": 3})
    native = tiny_client.post("/v1/generate", json={"prompts": [PROMPT, "x = "], "mode": "beam", "num_beams": 3,
                                                    "max_new_tokens": 8, "prompt_format": "raw", "stop": [],
                                                    "distinct": False, "token_logprobs": True}).json()
    # raw's default stops are not applied on the OpenAI routes; with stop [] the native one has none either
    assert [c.index for c in comp.choices] == list(range(6))
    expected = [c for r in native["results"] for c in r["candidates"]]
    assert [c.text for c in comp.choices] == [c["text"] for c in expected]
    assert [math.fsum(c.logprobs.token_logprobs) for c in comp.choices] == pytest.approx(
        [c["logprob"] for c in expected], abs=1e-9)


def test_length_penalty_reorders_beams(tiny_client: Any) -> None:
    body = {"model": model_id(tiny_client), "prompt": PROMPT, "max_tokens": 8, "n": 3, "logprobs": 0,
            "use_beam_search": True, "best_of": 3, "stop": ["\n"], "length_penalty": 1.0}
    choices = tiny_client.post("/v1/completions", json=body).json()["choices"]
    scores = [math.fsum(c["logprobs"]["token_logprobs"]) / max(1, len(c["logprobs"]["tokens"])) for c in choices]
    assert scores == sorted(scores, reverse=True)


def test_sampling_is_seeded_and_best_of_keeps_the_most_probable(oai: Any, tiny_client: Any) -> None:
    name = model_id(tiny_client)
    kw = {"model": name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0.9, "top_p": 0.95, "n": 2, "seed": 11,
          "logprobs": 0}
    a, b = oai.completions.create(**kw), oai.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    best = oai.completions.create(**kw | {"best_of": 4})
    sums = [math.fsum(c.logprobs.token_logprobs) for c in best.choices]
    assert len(best.choices) == 2 and sums == sorted(sums, reverse=True)


def test_echo_scores_the_prompt_like_lm_eval(oai: Any, tiny_client: Any, tiny_model: Any, smol_tokenizer: Any) -> None:
    """lm-evaluation-harness's local-completions asks for loglikelihoods with echo, max_tokens 0, logprobs 1."""
    name = model_id(tiny_client)
    comp = oai.completions.create(model=name, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, temperature=0)
    ids = smol_tokenizer(PROMPT)["input_ids"]
    lp = comp.choices[0].logprobs
    assert comp.choices[0].text == PROMPT and lp.token_logprobs[0] is None and len(lp.tokens) == len(ids)
    ref = teacher_forced(tiny_model, ids[:1], ids[1:])
    assert lp.token_logprobs[1:] == pytest.approx(ref, abs=1e-4)
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == PROMPT
    # echo with generation: the prompt's text and log-probabilities come first
    comp2 = oai.completions.create(model=name, prompt=PROMPT, max_tokens=4, echo=True, logprobs=0, temperature=0)
    assert comp2.choices[0].text.startswith(PROMPT) and len(comp2.choices[0].logprobs.tokens) == len(ids) + 4


def test_token_id_prompts(tiny_client: Any, smol_tokenizer: Any) -> None:
    ids = smol_tokenizer(PROMPT)["input_ids"]
    name = model_id(tiny_client)
    by_ids = tiny_client.post("/v1/completions", json={"model": name, "prompt": ids, "max_tokens": 5, "temperature": 0})
    by_text = tiny_client.post("/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 5,
                                                         "temperature": 0})
    assert by_ids.status_code == 200, by_ids.text
    assert by_ids.json()["choices"][0]["text"] == by_text.json()["choices"][0]["text"]


def test_chat_completion_with_logprobs(oai: Any, tiny_client: Any, tiny_model: Any, smol_tokenizer: Any) -> None:
    name = model_id(tiny_client)
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Add two numbers."}]
    chat = oai.chat.completions.create(model=name, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=2)
    ch = chat.choices[0]
    assert ch.message.role == "assistant" and ch.finish_reason in ("stop", "length")
    content = ch.logprobs.content
    assert "".join(t.token for t in content) == ch.message.content and len(content) == chat.usage.completion_tokens
    prompt = smol_tokenizer(smol_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                            add_special_tokens=False)["input_ids"]
    assert chat.usage.prompt_tokens == len(prompt)
    ids = [smol_tokenizer(t.token, add_special_tokens=False)["input_ids"] for t in content]
    assert all(len(t.top_logprobs) == 2 for t in content)
    if all(len(i) == 1 for i in ids):
        ref = teacher_forced(tiny_model, prompt, [i[0] for i in ids])
        assert [t.logprob for t in content] == pytest.approx(ref, abs=1e-3)


def test_streaming_completions_and_chat(oai: Any, tiny_client: Any) -> None:
    name = model_id(tiny_client)
    full = oai.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=0)
    chunks = list(oai.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=0,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    msgs = [{"role": "user", "content": "hi"}]
    chat = oai.chat.completions.create(model=name, messages=msgs, max_tokens=6, temperature=0)
    stream = list(oai.chat.completions.create(model=name, messages=msgs, max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in stream) == chat.choices[0].message.content
    assert stream[0].choices[0].delta.role == "assistant" and stream[-1].choices[0].finish_reason is not None
    # without logprobs too, a chunk per token
    plain = list(oai.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    texts = [c.choices[0].text for c in plain if c.choices and c.choices[0].text]
    assert "".join(texts) == full.choices[0].text and len(texts) >= min(2, full.usage.completion_tokens)
    # the raw wire: server-sent events ending in [DONE]
    raw = tiny_client.post("/v1/chat/completions", json={"model": name, "messages": msgs, "max_tokens": 3,
                                                         "temperature": 0, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in raw.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"


def test_raw_http_shapes(tiny_client: Any) -> None:
    name = model_id(tiny_client)
    r = tiny_client.post("/v1/completions", json={"model": name, "prompt": ["a", "b"], "max_tokens": 3, "n": 2,
                                                  "temperature": 0.5, "seed": 3, "user": "ignored"})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert isinstance(body["created"], int) and body["model"] == name
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert set(body["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    c = tiny_client.post("/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello"}]}], "max_completion_tokens": 2, "temperature": 0, "n": 2}).json()
    assert c["object"] == "chat.completion" and c["choices"][0]["message"]["role"] == "assistant"
    assert c["choices"][0]["message"]["content"] == c["choices"][1]["message"]["content"]  # greedy, n copies


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model"),
     ("/v1/completions", {"prompt": "x"}, 400, "model"),
     ("/v1/completions", {"model": "M", "prompt": "x", "n": 99}, 400, "n"),
     ("/v1/completions", {"model": "M", "prompt": "x", "presence_penalty": 1.0}, 400, None),
     ("/v1/completions", {"model": "M", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
     ("/v1/completions", {"model": "M", "prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
     ("/v1/chat/completions", {"model": "M", "messages": []}, 400, "messages"),
     ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
      400, None)],
)
def test_errors_have_openai_shape(tiny_client: Any, path: str, body: dict[str, Any], status: int,
                                  param: str | None) -> None:
    if body.get("model") == "M":
        body = body | {"model": model_id(tiny_client)}
    r = tiny_client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert err["param"] == param
    # the native routes keep the BTP envelope
    native = tiny_client.post("/v1/generate", json={"prompts": []})
    assert native.status_code == 422 and set(native.json()["error"]) == {"type", "message", "param"}


def test_client_raises_its_own_errors_and_auth(tiny_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    app = create_app(tiny_settings(tiny_dir, tmp_path, api_token="s3cret"))
    with TestClient(app, raise_server_exceptions=False) as http:
        bad = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.body["type"] == "authentication_error"  # type: ignore[index]
        good = openai.OpenAI(base_url="http://testserver/v1", api_key="s3cret", http_client=http, max_retries=0)
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            good.completions.create(model="gpt-5", prompt="x")
        with pytest.raises(openai.BadRequestError):
            good.completions.create(model=tiny_dir.name, prompt="x", n=2, best_of=1)
        assert good.completions.create(model=tiny_dir.name, prompt="x", max_tokens=2).choices[0].text is not None
