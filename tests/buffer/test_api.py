"""The buffer's HTTP API on both stores (SQLite file and real PostgreSQL): tasks, experiences,
idempotency, the testing phase, sampling end to end, stats, and the error envelope of every bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.client import BufferClient
from services.common.errors import NotFoundError, ValidationError
from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate, SampleRequest, TaskIn

from .conftest import experience_json, task_json


def assert_envelope(response: Any, status: int, error_type: str, param: str | None = None) -> dict[str, Any]:
    """The response is the error envelope with this status, type (and param)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param"}
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]


def seed(client: TestClient, n_tasks: int = 2, dataset: str = "humaneval") -> list[str]:
    ids = [f"HumanEval/{i}" for i in range(n_tasks)]
    r = client.post("/v1/tasks", json={"tasks": [task_json(t, dataset=dataset) for t in ids]})
    assert r.status_code == 200, r.text
    return ids


def count_experiences(client: TestClient) -> int:
    r = client.get("/v1/experiences", params={"limit": 1})
    assert r.status_code == 200
    return int(r.json()["total"])


# --- tasks ------------------------------------------------------------------------------------------


def test_tasks_upsert_get_list_with_slash_ids(client: TestClient) -> None:
    r = client.post("/v1/tasks", json={"tasks": [task_json("HumanEval/0"), task_json("mbpp/1", dataset="mbpp", split="train")]})
    assert r.json() == {"ids": ["HumanEval/0", "mbpp/1"], "created": 2, "updated": 0}
    # percent-encoded (what the client sends) and raw slashes both reach the task
    assert client.get("/v1/tasks/HumanEval%2F0").json()["id"] == "HumanEval/0"
    assert client.get("/v1/tasks/HumanEval/0").json()["tests"]["kind"] == "check"
    # upsert by id updates in place
    changed = task_json("HumanEval/0", prompt="def g():\n")
    r = client.post("/v1/tasks", json={"tasks": [changed]})
    assert r.json() == {"ids": ["HumanEval/0"], "created": 0, "updated": 1}
    assert client.get("/v1/tasks/HumanEval%2F0").json()["prompt"] == "def g():\n"
    listing = client.get("/v1/tasks", params={"dataset": "mbpp"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == "mbpp/1"
    assert client.get("/v1/tasks", params={"split": "test"}).json()["total"] == 1
    assert client.get("/v1/tasks").json()["total"] == 2


def test_unknown_task_is_404(client: TestClient) -> None:
    assert_envelope(client.get("/v1/tasks/HumanEval%2F999"), 404, "not_found", "task_id")


# --- experiences ------------------------------------------------------------------------------------


def test_bulk_insert_is_idempotent_and_ordered(client: TestClient) -> None:
    (task,) = seed(client, 1)
    items = [experience_json(task, f"return {i}", logprob=-float(i)) for i in range(5)]
    first = client.post("/v1/experiences", json={"items": items}).json()
    assert first["created"] == 5 and len(set(first["ids"])) == 5
    assert first["ids"] == sorted(first["ids"])
    again = client.post("/v1/experiences", json={"items": [*items, experience_json(task, "return 99")]}).json()
    assert again["ids"][:5] == first["ids"] and again["created"] == 1
    # the same program from another source is another experience; a repeat inside one batch is one row
    other = client.post(
        "/v1/experiences",
        json={"items": [experience_json(task, "return 0", source="m@1"), experience_json(task, "return 0", source="m@1")]},
    ).json()
    assert other["created"] == 1 and other["ids"][0] == other["ids"][1] and other["ids"][0] not in first["ids"]
    assert count_experiences(client) == 7
    got = client.get(f"/v1/experiences/{first['ids'][2]}").json()
    assert got["program"] == "return 2" and got["logprob"] == -2.0 and got["pass_rate"] is None
    assert got["probability"] == pytest.approx(0.1353352832366127)


def test_patch_sets_pass_rate_and_filters(client: TestClient) -> None:
    (task,) = seed(client, 1)
    ids = client.post(
        "/v1/experiences", json={"items": [experience_json(task, f"p{i}", round=i % 2) for i in range(4)]}
    ).json()["ids"]
    r = client.patch(f"/v1/experiences/{ids[0]}", json={"pass_rate": 0.75, "judge": {"verdict": "failed", "passed": 3}})
    assert r.status_code == 200, r.text
    assert r.json()["pass_rate"] == 0.75 and r.json()["judge"]["passed"] == 3 and r.json()["judged_at"]
    assert client.get("/v1/experiences", params={"judged": True}).json()["total"] == 1
    assert client.get("/v1/experiences", params={"judged": False}).json()["total"] == 3
    assert client.get("/v1/experiences", params={"round": 1}).json()["total"] == 2
    assert client.get("/v1/experiences", params={"task_id": task, "dataset": "humaneval"}).json()["total"] == 4
    assert client.get("/v1/experiences", params={"dataset": "nope"}).json()["total"] == 0
    page = client.get("/v1/experiences", params={"limit": 2, "offset": 2}).json()
    assert [e["id"] for e in page["items"]] == ids[2:]


def test_embedded_client_round_trip(client: TestClient) -> None:
    """What the trainer and the pipeline do: BufferClient over the in-process app."""
    buf = BufferClient(client=client)
    spec = {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}]}
    buf.upsert_tasks([TaskIn(id="codeio/7", dataset="codeio", split="train", prompt="add", tests=spec)])  # type: ignore[arg-type]
    out = buf.add_experiences(
        [ExperienceIn(task_id="codeio/7", program=f"def add(a, b): return a + b + {i}", logprob=-i - 0.5, token_count=12, source="smol@0", generation="g1") for i in range(3)]
    )
    for eid, rate in zip(out.ids, (1.0, 0.0, 0.5), strict=True):
        buf.update_experience(eid, ExperienceUpdate(pass_rate=rate))
    batch = buf.sample(SampleRequest(n=32, scheme="proportional", possibility="beam_softmax", seed=3))
    assert batch.population == 3 and len(batch.items) == 32
    assert {i.task_id for i in batch.items} == {"codeio/7"} and all(i.prompt == "add" for i in batch.items)
    assert buf.get_task("codeio/7").tests.kind == "call"  # type: ignore[union-attr]
    stats = buf.stats()
    assert stats.experiences == 3 and stats.judged == 3 and stats.datasets["codeio"].fully_passing == 1
    with pytest.raises(NotFoundError):
        buf.get_experience(10**9)
    with pytest.raises(ValidationError):
        buf.sample(SampleRequest(n=6000))


def test_sample_probabilities_match_eq_6_to_8(client: TestClient) -> None:
    """sample_probability is exactly P(i) of Eq. 7/8 recomputed here from the stored values."""
    (task,) = seed(client, 1)
    lps = [-1.0, -2.0, -3.0, -4.0]
    rates = [1.0, 0.5, 0.0, 0.5]
    ids = client.post(
        "/v1/experiences", json={"items": [experience_json(task, f"q{i}", logprob=lp, token_count=2) for i, lp in enumerate(lps)]}
    ).json()["ids"]
    for eid, rate in zip(ids, rates, strict=True):
        client.patch(f"/v1/experiences/{eid}", json={"pass_rate": rate})
    import math

    alpha = 0.3
    p2 = [alpha * math.exp(lp / 2) + (1 - alpha) * r for lp, r in zip(lps, rates, strict=True)]
    body = {"n": 200, "alpha": alpha, "possibility": "token_mean", "seed": 5, "priority_exponent": 2.0}
    prop = client.post("/v1/sample", json={**body, "scheme": "proportional"}).json()
    expected = {eid: v**2 / sum(x**2 for x in p2) for eid, v in zip(ids, p2, strict=True)}
    for item in prop["items"]:
        assert item["sample_probability"] == pytest.approx(expected[item["experience_id"]], rel=1e-9)
        assert item["p2value"] == pytest.approx(p2[ids.index(item["experience_id"])], rel=1e-12)
    rank = client.post("/v1/sample", json={**body, "scheme": "rank"}).json()
    order = sorted(range(4), key=lambda i: (-p2[i], ids[i]))
    harmonic = sum(1 / (r + 1) ** 2 for r in range(4))
    expected_rank = {ids[i]: (1 / (r + 1) ** 2) / harmonic for r, i in enumerate(order)}
    for item in rank["items"]:
        assert item["sample_probability"] == pytest.approx(expected_rank[item["experience_id"]], rel=1e-9)
    uni = client.post("/v1/sample", json={**body, "scheme": "uniform"}).json()
    assert {i["sample_probability"] for i in uni["items"]} == {0.25}
    # same seed, same minibatch; unjudged excluded unless asked for
    again = client.post("/v1/sample", json={**body, "scheme": "proportional"}).json()
    assert [i["experience_id"] for i in again["items"]] == [i["experience_id"] for i in prop["items"]]
    client.post("/v1/experiences", json={"items": [experience_json(task, "unjudged")]})
    assert client.post("/v1/sample", json=body).json()["population"] == 4
    assert client.post("/v1/sample", json={**body, "include_unjudged": True}).json()["population"] == 5


def test_sample_filters_and_empty_population(client: TestClient) -> None:
    client.post("/v1/tasks", json={"tasks": [task_json("a/1", dataset="a", split="train"), task_json("b/1", dataset="b", split="test")]})
    ids = client.post(
        "/v1/experiences",
        json={"items": [experience_json("a/1", "x", pass_rate=1.0), experience_json("b/1", "y", pass_rate=0.0, source="s2")]},
    ).json()["ids"]
    one = client.post("/v1/sample", json={"n": 10, "dataset": "a", "seed": 1}).json()
    assert one["population"] == 1 and {i["experience_id"] for i in one["items"]} == {ids[0]}
    assert client.post("/v1/sample", json={"n": 5, "split": "test"}).json()["population"] == 1
    assert client.post("/v1/sample", json={"n": 5, "source": "s2"}).json()["items"][0]["experience_id"] == ids[1]
    empty = client.post("/v1/sample", json={"n": 5, "dataset": "none"}).json()
    assert empty == {"items": [], "population": 0}
    # moving a task to another dataset moves its experiences (task map refresh)
    client.post("/v1/tasks", json={"tasks": [task_json("b/1", dataset="a", split="train")]})
    assert client.post("/v1/sample", json={"n": 5, "dataset": "a"}).json()["population"] == 2


def test_stats(client: TestClient) -> None:
    seed(client, 2)
    client.post("/v1/tasks", json={"tasks": [task_json("m/1", dataset="mbpp")]})
    client.post(
        "/v1/experiences",
        json={"items": [experience_json("HumanEval/0", "a", pass_rate=1.0), experience_json("HumanEval/1", "b", pass_rate=0.25), experience_json("m/1", "c")]},
    )
    s = client.get("/v1/stats").json()
    assert (s["tasks"], s["experiences"], s["judged"]) == (3, 3, 2)
    he = s["datasets"]["humaneval"]
    assert he["tasks"] == 2 and he["judged"] == 2 and he["fully_passing"] == 1
    assert he["mean_pass_rate"] == pytest.approx(0.625) and sum(he["pass_rate_histogram"]["counts"]) == 2
    assert s["datasets"]["mbpp"]["mean_pass_rate"] is None
    only = client.get("/v1/stats", params={"dataset": "mbpp"}).json()
    assert list(only["datasets"]) == ["mbpp"]
    assert (only["tasks"], only["experiences"], only["judged"]) == (1, 1, 0)  # totals of the data set asked for
    none = client.get("/v1/stats", params={"dataset": "apps"}).json()
    assert (none["tasks"], none["experiences"], none["judged"], none["datasets"]) == (0, 0, 0, {})


# --- bad input: a 4xx in the envelope, and nothing written -------------------------------------------


def test_unknown_task_in_batch_is_422_and_writes_nothing(client: TestClient) -> None:
    (task,) = seed(client, 1)
    items = [experience_json(task, "ok"), experience_json("HumanEval/404", "bad")]
    assert_envelope(client.post("/v1/experiences", json={"items": items}), 422, "validation_error", "items[1].task_id")
    assert count_experiences(client) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("probability", 1.5), ("probability", -0.1), ("pass_rate", 1.01), ("pass_rate", -1.0), ("logprob", 0.5), ("token_count", -1)],
)
def test_out_of_range_item_is_422_and_writes_nothing(client: TestClient, field: str, value: float) -> None:
    (task,) = seed(client, 1)
    items = [experience_json(task, "ok"), experience_json(task, "bad", **{field: value})]
    err = assert_envelope(client.post("/v1/experiences", json={"items": items}), 422, "validation_error")
    assert err["param"] == f"items.1.{field}"
    assert count_experiences(client) == 0


def test_program_too_large_is_413_and_writes_nothing(client: TestClient) -> None:
    (task,) = seed(client, 1)
    items = [experience_json(task, "ok"), experience_json(task, "é" * 2049)]  # 4098 bytes > 4096
    assert_envelope(client.post("/v1/experiences", json={"items": items}), 413, "payload_too_large", "items[1].program")
    assert count_experiences(client) == 0


def test_too_many_items_and_bad_text_are_422(client: TestClient) -> None:
    (task,) = seed(client, 1)
    many = [experience_json(task, f"p{i}") for i in range(501)]
    assert_envelope(client.post("/v1/experiences", json={"items": many}), 422, "validation_error", "items")
    nul = [experience_json(task, "a\x00b")]
    assert_envelope(client.post("/v1/experiences", json={"items": nul}), 422, "validation_error", "items.0.program")  # the shared check (issue 14)
    assert_envelope(
        client.post(
            "/v1/experiences",
            content=f'{{"items": [{{"task_id": "{task}", "program": "j", "logprob": -1, "token_count": 1, "judge": {{"x": NaN}}}}]}}',
            headers={"Content-Type": "application/json"},
        ),
        422,
        "validation_error",
    )
    assert count_experiences(client) == 0


def test_patch_errors(client: TestClient) -> None:
    (task,) = seed(client, 1)
    (eid,) = client.post("/v1/experiences", json={"items": [experience_json(task, "z")]}).json()["ids"]
    assert_envelope(client.patch(f"/v1/experiences/{eid}", json={"pass_rate": 1.5}), 422, "validation_error", "pass_rate")
    assert_envelope(client.patch(f"/v1/experiences/{eid}", json={"pass_rate": -0.5}), 422, "validation_error", "pass_rate")
    assert_envelope(client.patch(f"/v1/experiences/{eid}", json={}), 422, "validation_error", "pass_rate")
    assert_envelope(client.patch("/v1/experiences/999999", json={"pass_rate": 0.5}), 404, "not_found")
    assert_envelope(client.patch("/v1/experiences/abc", json={"pass_rate": 0.5}), 422, "validation_error")
    assert_envelope(client.get("/v1/experiences/0"), 422, "validation_error")
    assert client.get(f"/v1/experiences/{eid}").json()["pass_rate"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": -3}, "n"),
        ({"n": 5001}, "n"),
        ({"n": 4, "scheme": "greedy"}, "scheme"),
        ({"n": 4, "possibility": "mean"}, "possibility"),
        ({"n": 4, "alpha": 1.5}, "alpha"),
        ({"n": 4, "priority_exponent": -1}, "priority_exponent"),
        ({"n": 4, "seed": -1}, "seed"),
        ({"n": 4, "bogus": 1}, "bogus"),
    ],
)
def test_bad_sample_requests_are_422(client: TestClient, body: dict[str, Any], param: str) -> None:
    seed(client, 1)
    assert_envelope(client.post("/v1/sample", json=body), 422, "validation_error", param)


def test_malformed_json_is_400(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    for path in ("/v1/sample", "/v1/experiences", "/v1/tasks"):
        assert_envelope(client.post(path, content=b'{"n": 4,', headers=headers), 400, "invalid_json")
    assert_envelope(client.patch("/v1/experiences/1", content=b"[", headers=headers), 400, "invalid_json")
    assert count_experiences(client) == 0


def test_bad_task_bodies(client: TestClient) -> None:
    bad_spec = task_json("t/1")
    bad_spec["tests"] = {"kind": "nope"}
    assert_envelope(client.post("/v1/tasks", json={"tasks": [bad_spec]}), 422, "validation_error")
    assert_envelope(client.post("/v1/tasks", json={"tasks": []}), 422, "validation_error", "tasks")
    assert_envelope(client.post("/v1/tasks", json={"tasks": [task_json("t/\x00")]}), 422, "validation_error", "tasks.0.id")  # the shared check (issue 14)
    assert client.get("/v1/tasks").json()["total"] == 0
    assert_envelope(client.delete("/v1/tasks"), 405, "bad_request")


def test_sample_scoped_to_several_datasets(client: TestClient) -> None:
    """The bug: a run over several data sets sampled the whole buffer; ``datasets`` keeps it to its own."""
    tasks = [task_json("a/1", dataset="a", split="train"), task_json("b/1", dataset="b", split="train"),
             task_json("c/1", dataset="c", split="train")]  # fmt: skip
    client.post("/v1/tasks", json={"tasks": tasks})
    items = [experience_json(t["id"], f"prog {i}", pass_rate=1.0) for i, t in enumerate(tasks)]
    client.post("/v1/experiences", json={"items": items})
    body = {"n": 300, "scheme": "uniform", "split": "train", "seed": 3, "datasets": ["a", "b"]}
    r = client.post("/v1/sample", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["population"] == 2
    assert {i["task_id"] for i in r.json()["items"]} == {"a/1", "b/1"}
    both = client.post("/v1/sample", json=body | {"dataset": "b"}).json()
    assert both["population"] == 1 and {i["task_id"] for i in both["items"]} == {"b/1"}
    assert client.post("/v1/sample", json=body | {"datasets": []}).json()["population"] == 0


def test_weights_version_is_stored_listed_and_sampled(client: TestClient) -> None:
    """Async BTP: each program keeps the generator's weights version that sampled it (null when unknown);
    a draw reports it, which is how the trainer's lag is measured."""
    client.post("/v1/tasks", json={"tasks": [task_json("W/0", split="train")]})
    body = {"items": [experience_json("W/0", "return 1", weights_version=3), experience_json("W/0", "return 2"),
                      experience_json("W/0", "return 3", weights_version=0)]}  # fmt: skip
    ids = client.post("/v1/experiences", json=body).json()["ids"]
    listed = {e["id"]: e["weights_version"] for e in client.get("/v1/experiences", params={"task_id": "W/0"}).json()["items"]}
    assert listed == {ids[0]: 3, ids[1]: None, ids[2]: 0}
    for eid in ids:
        assert client.patch(f"/v1/experiences/{eid}", json={"pass_rate": 1.0}).status_code == 200
    drawn = client.post("/v1/sample", json={"n": 60, "scheme": "uniform", "seed": 1}).json()["items"]
    assert {(d["experience_id"], d["weights_version"]) for d in drawn} == set(listed.items())
    bad = client.post("/v1/experiences", json={"items": [experience_json("W/0", "x", weights_version=-1)]})
    assert bad.status_code == 422 and "weights_version" in bad.json()["error"]["param"]


def test_sample_returns_the_current_prompt_after_a_task_upsert(client: TestClient) -> None:
    """Prompts are cached per task version on the sample path: an upsert must show in the next sample."""
    client.post("/v1/tasks", json={"tasks": [task_json("P/1", prompt="def old():\n"), task_json("P/2", prompt="two\n")]})
    client.post("/v1/experiences", json={"items": [experience_json("P/1", "return 1", pass_rate=1.0),
                                                   experience_json("P/2", "return 2", pass_rate=1.0)]})
    first = client.post("/v1/sample", json={"n": 16, "seed": 1}).json()["items"]
    assert {(i["task_id"], i["prompt"]) for i in first} == {("P/1", "def old():\n"), ("P/2", "two\n")}
    client.post("/v1/tasks", json={"tasks": [task_json("P/1", prompt="def new():\n")]})
    again = client.post("/v1/sample", json={"n": 16, "seed": 1}).json()["items"]
    assert {(i["task_id"], i["prompt"]) for i in again} == {("P/1", "def new():\n"), ("P/2", "two\n")}
