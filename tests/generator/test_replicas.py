"""Client-side spreading over generator replicas: two real generator apps behind one client.

Each replica is its own generator app (its own engine and weights) serving the tiny model; the spreading
client cuts a request's prompts between them, joins the answers in prompt order, publishes weights to
both, and refuses answers that came from different weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.client import GeneratorClient
from services.common.errors import NotFoundError, UpstreamError
from services.common.schemas.generator import GenerateRequest
from services.common.spread import ReplicatedGeneratorClient, generator_client, spans, split_urls

from .conftest import tiny_settings

PROMPTS = ["def add(a, b):\n", "hello", "def is_even(n):\n", "# sort a list\n", "x = "]


def _request(prompts: list[str]) -> GenerateRequest:
    return GenerateRequest(prompts=prompts, num_beams=2, max_new_tokens=8, prompt_format="raw")


@pytest.fixture
def replicas(tiny_dir: Path, tmp_path: Path) -> Iterator[tuple[ReplicatedGeneratorClient, list[Any], list[list[int]]]]:
    """Two generator apps on tiny-a behind a spreading client; and the prompt counts each one received."""
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    seen: list[list[int]] = [[], []]
    apps = [TestClient(create_app(tiny_settings(tiny_dir, tmp_path / f"r{i}"))) for i in range(2)]
    for i, tc in enumerate(apps):
        def record(request: httpx.Request, i: int = i) -> None:
            if request.url.path == "/v1/generate":
                import json

                seen[i].append(len(json.loads(request.content)["prompts"]))

        tc.event_hooks["request"].append(record)
    for tc in apps:
        tc.__enter__()
    try:
        yield ReplicatedGeneratorClient([GeneratorClient(client=tc) for tc in apps]), apps, seen
    finally:
        for tc in apps:
            tc.__exit__(None, None, None)


@pytest.fixture
def single(tiny_dir: Path, tmp_path: Path) -> Iterator[GeneratorClient]:
    """One generator app on tiny-a: the reference a spread request must reproduce."""
    from fastapi.testclient import TestClient

    from services.generator.app import create_app

    with TestClient(create_app(tiny_settings(tiny_dir, tmp_path / "single"))) as tc:
        yield GeneratorClient(client=tc)


def _same_results(spread: Any, one: Any) -> None:
    assert [r.prompt_index for r in spread.results] == list(range(len(one.results)))
    for a, b in zip(spread.results, one.results, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert [c.token_ids for c in a.candidates] == [c.token_ids for c in b.candidates]
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
        assert [c.logprob for c in a.candidates] == pytest.approx([c.logprob for c in b.candidates], abs=1e-4)


def test_spans_cover_every_item_once() -> None:
    assert spans(5, 2) == [(0, 0, 3), (1, 3, 5)]
    assert spans(1, 3, first=2) == [(2, 0, 1)]
    assert spans(4, 3, first=1) == [(1, 0, 2), (2, 2, 3), (0, 3, 4)]
    for n in range(1, 12):
        for parts in range(1, 5):
            cut = spans(n, parts, first=n % parts)
            assert [i for _, a, b in cut for i in range(a, b)] == list(range(n))
            assert len({r for r, _, _ in cut}) == len(cut)


def test_comma_separated_urls_give_a_replicated_client() -> None:
    assert split_urls(" http://a:1, ,http://b:2 ") == ["http://a:1", "http://b:2"]
    with generator_client("http://127.0.0.1:1") as one:
        assert type(one) is GeneratorClient
    with generator_client("http://127.0.0.1:1, http://127.0.0.1:2", timeout=3.0) as two:
        assert isinstance(two, ReplicatedGeneratorClient)
        assert two.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        assert all(r.http.timeout.read == 3.0 for r in two.replicas)


def test_prompts_are_split_and_rejoined_in_order(replicas: Any, single: GeneratorClient) -> None:
    client, _, seen = replicas
    spread = client.generate(_request(PROMPTS))
    assert seen == [[3], [2]]  # both replicas worked, each on its part
    _same_results(spread, single.generate(_request(PROMPTS)))
    # one-prompt requests go to the replicas in turn
    client.generate(_request(PROMPTS[:1]))
    client.generate(_request(PROMPTS[:1]))
    assert sorted([seen[0][1:], seen[1][1:]]) == [[1], [1]]


def test_weights_are_published_to_every_replica(replicas: Any, single: GeneratorClient, tiny_dir_b: Path) -> None:
    client, apps, _ = replicas
    answer = client.set_weights(str(tiny_dir_b))
    assert answer.checkpoint == str(tiny_dir_b)
    assert [tc.get("/health").json()["checkpoint"] for tc in apps] == [str(tiny_dir_b)] * 2
    assert [r["checkpoint"] for r in client.health()["replicas"]] == [str(tiny_dir_b)] * 2
    spread = client.generate(_request(PROMPTS))
    assert spread.checkpoint == str(tiny_dir_b)
    single.set_weights(str(tiny_dir_b))
    _same_results(spread, single.generate(_request(PROMPTS)))


def test_answers_from_different_weights_are_refused(replicas: Any, tiny_dir_b: Path) -> None:
    client, apps, _ = replicas
    assert apps[1].post("/v1/weights", json={"checkpoint": str(tiny_dir_b)}).status_code == 200  # behind its back
    with pytest.raises(UpstreamError, match="different weights"):
        client.generate(_request(PROMPTS))
    client.set_weights(str(tiny_dir_b))  # publishing to every replica makes them consistent again
    assert client.generate(_request(PROMPTS)).checkpoint == str(tiny_dir_b)


def test_a_bad_checkpoint_fails_naming_the_replica(replicas: Any, tmp_path: Path, tiny_dir: Path) -> None:
    client, apps, _ = replicas
    with pytest.raises(NotFoundError) as info:  # the replica's own 4xx, not a 5xx of the spreading
        client.set_weights(str(tmp_path / "no-such-checkpoint"))
    assert info.value.status_code == 404 and "generator replica http://" in info.value.message
    assert [tc.get("/health").json()["checkpoint"] for tc in apps] == [str(tiny_dir)] * 2  # old weights serve on
