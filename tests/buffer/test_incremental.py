"""The incremental sampling structures equal a from-scratch build after any sequence of small writes."""

from __future__ import annotations

import numpy as np
import pytest

from services.buffer import incremental
from services.buffer import priority as sampling
from services.buffer.incremental import IncrementalState, RankList, SumTree


def _random_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # few distinct values: many P2Value ties, which the rank order breaks by id
    p2 = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], n) + rng.choice([0.0, 0.1], n)
    member = rng.random(n) < 0.8
    return member, p2


@pytest.mark.parametrize("scheme", ["rank", "proportional"])
@pytest.mark.parametrize("exponent", [1.0, 0.5])
def test_updates_match_a_fresh_build(scheme: str, exponent: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental, "BLOCK", 8)  # small blocks: splits and emptied blocks happen
    rng = np.random.default_rng(7)
    n = 300
    member, p2 = _random_rows(rng, n)
    ids = np.arange(1, n + 1, dtype=np.int64) * 3
    state = IncrementalState(scheme, exponent, 1, 0, member, p2, ids)
    for serial in range(2, 60):
        # a write: some updates (membership and P2Value change), some appended rows
        new_rows = int(rng.integers(0, 40))
        if new_rows:
            m2, v2 = _random_rows(rng, new_rows)
            member, p2 = np.concatenate([member, m2]), np.concatenate([p2, v2])
            ids = np.concatenate([ids, ids[-1] + 3 * np.arange(1, new_rows + 1)])
        upd = rng.choice(n, int(rng.integers(0, 30)), replace=False)
        member[upd], p2[upd] = _random_rows(rng, upd.size)
        changed = np.unique(np.concatenate([upd, np.arange(n, n + new_rows)])).astype(np.int64)
        n += new_rows
        state.advance(serial, n, changed, member[changed], p2[changed], ids)
        fresh = IncrementalState(scheme, exponent, serial, 0, member, p2, ids)
        state.check(fresh)
    # the order is exactly the reference rank order / the leaves exactly the Eq. 7 weights
    if scheme == "rank":
        pop = np.flatnonzero(member)
        want = pop[sampling.rank_order(p2[pop], ids[pop])]
        assert state.ranks is not None
        np.testing.assert_array_equal(state.ranks.order(), want)
        assert len(state.ranks.pos) > 5
    else:
        assert state.tree is not None
        want_w = np.where(member, np.power(np.maximum(p2, sampling.P2VALUE_FLOOR), exponent), 0.0)
        np.testing.assert_allclose(state.tree.leaves(n), want_w)


def test_sum_tree_draws_follow_the_weights_and_never_a_zero_leaf() -> None:
    rng = np.random.default_rng(0)
    w = np.zeros(37)
    w[[0, 5, 6, 36]] = [1.0, 2.0, 3.0, 4.0]
    tree = SumTree(w)
    draws = tree.draw(200_000, rng)
    assert set(np.unique(draws).tolist()) == {0, 5, 6, 36}
    freq = np.bincount(draws, minlength=37)[[0, 5, 6, 36]] / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.005)
    tree.update(np.array([5, 10]), np.array([0.0, 4.0]))
    draws = tree.draw(100_000, rng)
    assert 5 not in draws and 10 in draws
    assert tree.total == pytest.approx(12.0)


def test_rank_list_finds_ranks_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental, "BLOCK", 4)
    pos = np.arange(20, dtype=np.int64)
    neg = -np.linspace(1.0, 0.0, 20)
    ids = np.arange(20, dtype=np.int64) + 100
    ranks = RankList(pos, neg, ids)
    np.testing.assert_array_equal(ranks.at_ranks(np.array([0, 3, 4, 19])), [0, 3, 4, 19])
    ranks.apply([(float(neg[0]), 100)], [(50, -2.0, 999)])  # the top row drops out, a new top row comes in
    np.testing.assert_array_equal(ranks.at_ranks(np.array([0, 1, 19])), [50, 1, 19])
    with pytest.raises(KeyError):
        ranks.remove(-0.5, 12345)
