"""The pure sampling core: Eq. 6 (P2Value, three possibility modes), Eq. 7 (proportional), Eq. 8 (rank),
uniform; chi-square tests of the draw frequencies with fixed seeds; non-zero floor; deterministic ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from services.buffer import priority as sampling


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray, draws: int) -> float:
    """Pearson chi-square p-value, pooling bins whose expected count is below 5 into one."""
    expected = probs * draws
    small = expected < 5
    obs = list(counts[~small])
    exp = list(expected[~small])
    if small.any():
        obs.append(counts[small].sum())
        exp.append(expected[small].sum())
    obs_a, exp_a = np.asarray(obs, dtype=float), np.asarray(exp, dtype=float)
    exp_a *= obs_a.sum() / exp_a.sum()
    return float(stats.chisquare(obs_a, exp_a).pvalue)


def population(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p2 = rng.random(n)
    p2[:3] = 0.0  # P2Value 0: still sampled (floor)
    p2[10:13] = 0.5  # ties
    ids = rng.permutation(np.arange(100, 100 + n)).astype(np.int64)
    return p2, ids


@pytest.mark.parametrize(
    ("scheme", "exponent"),
    [("proportional", 1.0), ("proportional", 2.0), ("proportional", 0.5), ("rank", 1.0), ("rank", 0.6), ("uniform", 1.0)],
)
def test_draw_frequencies_follow_eq_7_and_8(scheme: str, exponent: float) -> None:
    p2, ids = population()
    draws = 200_000
    positions, probs = sampling.sample(scheme, p2, ids, draws, exponent=exponent, seed=1234)
    exact = sampling.exact_probabilities(scheme, p2, ids, exponent)
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(probs, exact[positions], rtol=1e-12)
    # independent reference of Eq. 7 / Eq. 8
    if scheme == "proportional":
        w = np.maximum(p2, sampling.P2VALUE_FLOOR) ** exponent
    elif scheme == "rank":
        order = sorted(range(p2.size), key=lambda i: (-p2[i], ids[i]))
        rank = np.empty(p2.size)
        rank[order] = np.arange(1, p2.size + 1)
        w = (1.0 / rank) ** exponent
    else:
        w = np.ones(p2.size)
    np.testing.assert_allclose(exact, w / w.sum(), rtol=1e-10)
    counts = np.bincount(positions, minlength=p2.size)
    assert chi_square_pvalue(counts, exact, draws) > 1e-3
    # a wrong distribution is rejected by the same test (the test has power)
    if scheme != "uniform":
        assert chi_square_pvalue(counts, np.full(p2.size, 1.0 / p2.size), draws) < 1e-6


def test_every_item_keeps_a_non_zero_probability() -> None:
    p2 = np.array([0.0, 0.0, 1.0, 0.9])
    ids = np.arange(4, dtype=np.int64)
    for scheme in sampling.SCHEMES:
        for exponent in (0.0, 1.0, 3.0, 10.0):
            assert (sampling.exact_probabilities(scheme, p2, ids, exponent) > 0).all(), (scheme, exponent)
    # an underflowed sequence possibility with alpha = 1 and nothing judged
    poss = sampling.possibility("sequence", np.array([-2000.0, -1.0]), np.array([900, 1]))
    assert poss[0] == 0.0
    p2z = sampling.p2value(1.0, poss, np.array([np.nan, np.nan]))
    exact = sampling.exact_probabilities("proportional", p2z, np.arange(2, dtype=np.int64))
    assert exact[0] > 0 and exact[0] == pytest.approx(sampling.P2VALUE_FLOOR / (sampling.P2VALUE_FLOOR + np.exp(-1.0)))
    # the lowest item is actually reachable: the draw maps its slice of [0, W) to it
    dist = sampling.build_distribution("proportional", np.array([0.0, 1.0]), np.arange(2, dtype=np.int64), 1.0)

    class FixedU:
        def random(self, n: int) -> np.ndarray:
            return np.full(n, 0.5 * sampling.P2VALUE_FLOOR / dist.total)

    assert dist.order[dist.draw(3, FixedU())].tolist() == [0, 0, 0]  # type: ignore[arg-type]


def test_rank_ties_are_broken_by_id_whatever_the_input_order() -> None:
    p2 = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    ids = np.array([30, 10, 20, 40, 50], dtype=np.int64)
    order = sampling.rank_order(p2, ids)
    assert ids[order].tolist() == [10, 20, 30, 40, 50]
    base = dict(zip(ids.tolist(), sampling.exact_probabilities("rank", p2, ids).tolist(), strict=True))
    h = sum(1 / r for r in range(1, 6))
    assert base[20] == pytest.approx((1 / 2) / h) and base[30] == pytest.approx((1 / 3) / h)
    perm = np.array([4, 2, 0, 3, 1])
    shuffled = sampling.exact_probabilities("rank", p2[perm], ids[perm])
    assert dict(zip(ids[perm].tolist(), shuffled.tolist(), strict=True)) == base


def test_possibility_modes_and_p2value() -> None:
    lp = np.array([-2.0, -4.0, -1.0, -3.0, -0.5])
    tc = np.array([4, 2, 0, 3, 1])
    group = np.array([7, 7, 7, 9, 11])
    np.testing.assert_allclose(sampling.possibility("sequence", lp, tc), np.exp(lp))
    np.testing.assert_allclose(sampling.possibility("token_mean", lp, tc), np.exp(lp / np.maximum(tc, 1)))
    soft = sampling.possibility("beam_softmax", lp, tc, group)
    np.testing.assert_allclose(soft[:3], np.exp(lp[:3]) / np.exp(lp[:3]).sum())
    np.testing.assert_allclose(soft[3:], [1.0, 1.0])
    # numerically stable for very negative beams
    tiny = sampling.possibility("beam_softmax", np.array([-5000.0, -5001.0]), np.array([1, 1]), np.array([1, 1]))
    np.testing.assert_allclose(tiny, [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    poss = np.array([0.2, 0.4, 0.9])
    rate = np.array([1.0, np.nan, 0.5])
    np.testing.assert_allclose(sampling.p2value(0.25, poss, rate), [0.05 + 0.75, 0.1, 0.225 + 0.375])
    with pytest.raises(ValueError):
        sampling.possibility("median", lp, tc)
    with pytest.raises(ValueError):
        sampling.build_distribution("greedy", poss, np.arange(3, dtype=np.int64), 1.0)


def test_seeded_draws_are_reproducible_and_exponent_zero_is_uniform() -> None:
    p2, ids = population()
    a, _ = sampling.sample("rank", p2, ids, 100, seed=7)
    b, _ = sampling.sample("rank", p2, ids, 100, seed=7)
    c, _ = sampling.sample("rank", p2, ids, 100, seed=8)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    np.testing.assert_allclose(sampling.exact_probabilities("proportional", p2, ids, 0.0), 1 / p2.size)
    with pytest.raises(ValueError):
        sampling.build_distribution("uniform", np.array([]), np.array([], dtype=np.int64), 1.0).draw(1, np.random.default_rng())
