"""Sampling frequencies through the service on both stores: chi-square per scheme against P(i)
recomputed here from the stored logprobs and pass rates (Eq. 6-8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from .conftest import experience_json, task_json
from .test_priority import chi_square_pvalue


@pytest.mark.parametrize("scheme", ["proportional", "rank", "uniform"])
def test_service_frequencies(client: TestClient, scheme: str) -> None:
    client.post("/v1/tasks", json={"tasks": [task_json(f"T/{t}") for t in range(3)]})
    rng = np.random.default_rng(42)
    items = []
    for i in range(24):
        items.append(
            experience_json(
                f"T/{i % 3}", f"prog {i}", logprob=float(-rng.uniform(0.5, 30)), token_count=int(rng.integers(1, 40)),
                pass_rate=float(rng.choice([0.0, 0.25, 0.5, 1.0])), generation=f"g{i // 3}",
            )
        )
    items[5]["pass_rate"] = items[6]["pass_rate"] = 0.0
    items[5]["logprob"] = items[6]["logprob"] = -2000.0  # P2Value 0 with alpha=1: floor, and a tie
    ids = client.post("/v1/experiences", json={"items": items}).json()["ids"]
    alpha, exponent = 0.6, 1.5
    poss = np.array([math.exp(it["logprob"] / it["token_count"]) for it in items])
    p2 = alpha * poss + (1 - alpha) * np.array([it["pass_rate"] for it in items])
    if scheme == "proportional":
        w = np.maximum(p2, 1e-6) ** exponent
    elif scheme == "rank":
        order = sorted(range(len(ids)), key=lambda i: (-p2[i], ids[i]))
        rank = np.empty(len(ids))
        rank[order] = np.arange(1, len(ids) + 1)
        w = rank**-exponent
    else:
        w = np.ones(len(ids))
    expected = w / w.sum()
    counts = np.zeros(len(ids))
    position = {eid: k for k, eid in enumerate(ids)}
    draws = 0
    for seed in range(6):
        body = {"n": 4096, "scheme": scheme, "alpha": alpha, "priority_exponent": exponent, "possibility": "token_mean", "seed": seed}
        out = client.post("/v1/sample", json=body).json()
        assert out["population"] == len(ids)
        for item in out["items"]:
            k = position[item["experience_id"]]
            counts[k] += 1
            assert item["sample_probability"] == pytest.approx(expected[k], rel=1e-9)
        draws += len(out["items"])
    assert chi_square_pvalue(counts, expected, draws) > 1e-3
    assert (expected > 0).all()
