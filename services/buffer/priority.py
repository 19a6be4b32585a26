"""The pure sampling core: possibility, P2Value (Eq. 6) and prioritized sampling (Eq. 7-8), numpy only.

Definitions (arXiv 2410.12236, names as in ARCHITECTURE.md):

- possibility P(t), one of three modes, each in (0, 1]:
  ``sequence``     exp(logprob): the paper's literal P(t) = prod P(y_j | X, y_<j);
  ``token_mean``   exp(logprob / max(token_count, 1)): the per-token geometric mean, comparable across
                   program lengths (the default everywhere, see ``DEFAULT_POSSIBILITY``);
  ``beam_softmax`` exp(logprob_i) / sum_j exp(logprob_j) over the beams j of the same group
                   (task_id, source, round, generation): P(t_i) normalised over the k beams.
- P2Value_i = alpha * P(t_i) + (1 - alpha) * pass_rate_i (Eq. 6); an unjudged experience, when the
  request admits it, counts with pass_rate 0.
- Priorities p_i and P(i) = p_i^e / sum_k p_k^e (Eq. 7), e = ``priority_exponent``:
  ``proportional`` p_i = max(P2Value_i, P2VALUE_FLOOR). The floor (1e-6) is what keeps an item whose
                   P2Value is 0 (alpha = 0 and pass_rate 0, or an underflowed ``sequence`` possibility)
                   at a non-zero probability, as the paper requires; it is far below any P2Value
                   that a judged program with one passing test or a token-mean possibility reaches.
  ``rank``         p_i = 1 / rank(i) (Eq. 8), rank 1 = highest P2Value. Ties are broken
                   deterministically: P2Value descending, then experience id ascending (the older
                   experience ranks first), so ranks are a permutation of 1..N.
  ``uniform``      P(i) = 1 / N.
  Every p_i > 0 and p_i^e > 0 for e <= 10, so every item keeps a non-zero probability.

Sampling is with replacement: ``u ~ U[0, W)``, ``k = searchsorted(cumsum(w), u, 'right')``, which is
O(N) to prepare and O(n log N) per draw of n. A :class:`Distribution` is immutable, so the service can
cache it and draw from it again for the next request (see :mod:`services.buffer.index`).
``probability(k)`` returns exactly w_k / W, the P(i) the draw used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Scheme = Literal["rank", "proportional", "uniform"]
Possibility = Literal["sequence", "token_mean", "beam_softmax"]
SCHEMES: tuple[str, ...] = ("proportional", "rank", "uniform")
POSSIBILITIES: tuple[str, ...] = ("sequence", "token_mean", "beam_softmax")
P2VALUE_FLOOR = 1e-6

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def possibility(
    mode: str,
    logprob: FloatArray,
    token_count: IntArray,
    group: IntArray | None = None,
) -> FloatArray:
    """P(t) per experience in the given mode (see the module docstring)."""
    lp = np.minimum(np.asarray(logprob, dtype=np.float64), 0.0)
    if mode == "sequence":
        return np.exp(lp)
    if mode == "token_mean":
        tc = np.maximum(np.asarray(token_count, dtype=np.float64), 1.0)
        return np.exp(lp / tc)
    if mode == "beam_softmax":
        if group is None:
            raise ValueError("beam_softmax needs the group of each experience")
        if lp.size == 0:
            return lp.copy()
        _, inverse = np.unique(np.asarray(group), return_inverse=True)
        inverse = inverse.reshape(-1)
        top = np.full(int(inverse.max()) + 1, -np.inf)
        np.maximum.at(top, inverse, lp)
        shifted = np.exp(lp - top[inverse])
        totals = np.bincount(inverse, weights=shifted)
        return np.asarray(shifted / totals[inverse], dtype=np.float64)
    raise ValueError(f"unknown possibility mode {mode!r}; expected one of {POSSIBILITIES}")


def p2value(alpha: float, poss: FloatArray, pass_rate: FloatArray) -> FloatArray:
    """Eq. 6: alpha * P(t) + (1 - alpha) * pass_rate, NaN pass rates (unjudged) counting as 0."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    pr = np.nan_to_num(np.asarray(pass_rate, dtype=np.float64), nan=0.0)
    return np.asarray(alpha * np.asarray(poss, dtype=np.float64) + (1.0 - alpha) * pr, dtype=np.float64)


def rank_order(p2: FloatArray, ids: IntArray) -> IntArray:
    """Positions sorted by P2Value descending, then id ascending: element r has rank r + 1."""
    return np.lexsort((np.asarray(ids), -np.asarray(p2))).astype(np.int64)


@dataclass(frozen=True)
class Distribution:
    """An immutable sampling distribution over N items (positions into the population arrays).

    ``order[k]`` is the population position of slot k; ``weights[k]`` its unnormalised weight;
    ``cdf`` the running sum (None for uniform).
    """

    scheme: str
    order: IntArray
    weights: FloatArray | None
    cdf: FloatArray | None

    @property
    def size(self) -> int:
        return int(self.order.size)

    @property
    def total(self) -> float:
        return float(self.cdf[-1]) if self.cdf is not None else float(self.size)

    def draw(self, n: int, rng: np.random.Generator) -> IntArray:
        """n slots drawn with replacement (indices into ``order``)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty population")
        if self.cdf is None:
            return rng.integers(0, self.size, size=n, dtype=np.int64)
        u = rng.random(n) * self.total
        slots = np.searchsorted(self.cdf, u, side="right")
        return np.minimum(slots, self.size - 1).astype(np.int64)

    def probability(self, slots: IntArray) -> FloatArray:
        """P(i) of the given slots: exactly w_k / W as used by :meth:`draw`."""
        if self.weights is None:
            return np.full(np.asarray(slots).shape, 1.0 / self.size)
        return np.asarray(self.weights[slots] / self.total, dtype=np.float64)


_RANK_WEIGHTS: dict[float, tuple[FloatArray, FloatArray]] = {}
_RANK_LOCK = threading.Lock()


def rank_distribution(n: int, exponent: float) -> Distribution:
    """Eq. 8 over n items already in rank order: w_r = (1 / r)^e.

    The weights and their running sum for ranks 1..n are a prefix of those for any larger n, so one
    array per exponent (grown when needed, never written after publication) serves every population size.
    """
    if n == 0:
        return Distribution("rank", np.arange(0, dtype=np.int64), None, None)
    weights, cdf = rank_weights(n, exponent)
    return Distribution("rank", np.arange(n, dtype=np.int64), weights, cdf)


def draw_ranks(n_items: int, exponent: float, n: int, rng: np.random.Generator) -> tuple[IntArray, FloatArray]:
    """n 0-based ranks drawn with replacement by Eq. 8 and their P(i): the same draws and probabilities as
    ``rank_distribution(n_items, exponent)``'s, without building its O(N) identity order."""
    weights, cdf = rank_weights(n_items, exponent)
    total = float(cdf[-1])
    slots = np.minimum(np.searchsorted(cdf, rng.random(n) * total, side="right"), n_items - 1).astype(np.int64)
    return slots, np.asarray(weights[slots] / total, dtype=np.float64)


def rank_weights(n: int, exponent: float) -> tuple[FloatArray, FloatArray]:
    """(1 / r)^e for r = 1..n and their running sum (views of one cached array per exponent)."""
    with _RANK_LOCK:
        cached = _RANK_WEIGHTS.get(exponent)
        if cached is None or cached[0].size < n:
            size = max(n + n // 4, 1024, 0 if cached is None else int(cached[0].size * 1.5))  # room to grow
            base = 1.0 / np.arange(1, size + 1, dtype=np.float64)
            weights = base if exponent == 1.0 else np.power(base, exponent)
            cached = (weights, np.cumsum(weights))
            if len(_RANK_WEIGHTS) >= 16:
                _RANK_WEIGHTS.clear()
            _RANK_WEIGHTS[exponent] = cached
    return cached[0][:n], cached[1][:n]


def build_distribution(scheme: str, p2: FloatArray, ids: IntArray, exponent: float) -> Distribution:
    """Eq. 7 (proportional), Eq. 8 (rank) or uniform over the items with the given P2Values."""
    p2 = np.asarray(p2, dtype=np.float64)
    n = p2.size
    if scheme == "uniform" or n == 0:
        return Distribution(scheme, np.arange(n, dtype=np.int64), None, None)
    if scheme == "proportional":
        order = np.arange(n, dtype=np.int64)
        base = np.maximum(p2, P2VALUE_FLOOR)
    elif scheme == "rank":
        order = rank_order(p2, ids)
        base = 1.0 / np.arange(1, n + 1, dtype=np.float64)
    else:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    weights = base if exponent == 1.0 else np.power(base, exponent)
    return Distribution(scheme, order, weights, np.cumsum(weights))


def sample(
    scheme: str,
    p2: FloatArray,
    ids: IntArray,
    n: int,
    *,
    exponent: float = 1.0,
    seed: int | None = None,
) -> tuple[IntArray, FloatArray]:
    """Convenience: draw n population positions and their P(i) in one call."""
    dist = build_distribution(scheme, p2, ids, exponent)
    slots = dist.draw(n, np.random.default_rng(seed))
    return dist.order[slots], dist.probability(slots)


def exact_probabilities(scheme: str, p2: FloatArray, ids: IntArray, exponent: float = 1.0) -> FloatArray:
    """P(i) of every item, in population order (for tests and stats)."""
    dist = build_distribution(scheme, p2, ids, exponent)
    out = np.empty(dist.size, dtype=np.float64)
    out[dist.order] = dist.probability(np.arange(dist.size, dtype=np.int64))
    return out
