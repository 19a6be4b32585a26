"""Sampling structures that a small write updates in O(k log N) instead of O(N): the first ``POST /v1/sample``
after a write of k rows costs milliseconds at 1M experiences, not tens of milliseconds.

- :class:`SumTree` (``proportional``): a binary tree over every snapshot position whose leaves are the
  priorities ``max(P2Value, floor)^e`` of the rows the filter admits (0 for the others) and whose inner
  nodes are the sums of their children. A draw descends from the root with ``u ~ U[0, total)`` (n draws
  at once, one numpy step per level), so P(i) = w_i / total exactly as Eq. 7; a write re-sets k leaves
  and the O(k log N) sums above them.
- :class:`RankList` (``rank``): the admitted rows sorted by (P2Value descending, id ascending), held as a
  list of small sorted blocks (a few thousand rows each) with their running sizes. Rank r (Eq. 8) is found
  by a binary search over the block sizes; a write takes each changed row out of its block (found by its
  old key) and puts it back at its new key, O(k (log N + block)) instead of re-merging N rows.

Invariant (checked by ``check()`` and by tests/buffer/test_incremental.py): after any sequence of
updates, the structure equals the one built from scratch on the same snapshot, i.e. the same
leaves / the same order, hence the same P(i) for every row.

Both are mutable and owned by one :class:`IncrementalState` with a lock; a state records the serial of
the snapshot it matches, and a draw holds the lock and checks that serial, so a request never draws
from a structure already moved to a newer snapshot than the one it looked its rows up in.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from . import priority as sampling

BLOCK = 2048


def _pow(base: npt.NDArray[np.float64], exponent: float) -> npt.NDArray[np.float64]:
    return base if exponent == 1.0 else np.power(base, exponent)


class SumTree:
    """Sums over a power-of-two number of leaves (see the module docstring)."""

    def __init__(self, leaves: npt.NDArray[np.float64]) -> None:
        cap = 1
        while cap < max(1, leaves.size):
            cap *= 2
        self.cap = cap
        self.tree = np.zeros(2 * cap, dtype=np.float64)
        self.tree[cap : cap + leaves.size] = leaves
        lo = cap // 2
        while lo >= 1:  # level by level: node i = children 2i + 2i+1
            self.tree[lo : 2 * lo] = self.tree[2 * lo : 4 * lo : 2] + self.tree[2 * lo + 1 : 4 * lo : 2]
            lo //= 2

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self, n: int) -> npt.NDArray[np.float64]:
        return self.tree[self.cap : self.cap + n]

    def fits(self, n: int) -> bool:
        return n <= self.cap

    def update(self, positions: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        """Set the leaves at ``positions`` (unique) and recompute the sums above them."""
        if positions.size == 0:
            return
        nodes = positions + self.cap
        self.tree[nodes] = values
        nodes = np.unique(nodes // 2)
        while nodes.size and nodes[0] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def draw(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """n leaf positions drawn with replacement, P(i) = leaf_i / total (never a zero leaf)."""
        tree = self.tree
        u = rng.random(n) * tree[1]
        node = np.ones(n, dtype=np.int64)
        while node[0] < self.cap:  # every draw is at the same depth
            left = tree[2 * node]
            right = tree[2 * node + 1]
            go_right = (u >= left) & (right > 0)
            u = np.where(go_right, u - left, u)
            node = 2 * node + go_right
        return node - self.cap


class RankList:
    """Rows sorted by (P2Value descending, id ascending) in blocks (see the module docstring)."""

    def __init__(self, positions: npt.NDArray[np.int64], neg_p2: npt.NDArray[np.float64], ids: npt.NDArray[np.int64]) -> None:
        self.pos: list[npt.NDArray[np.int64]] = []
        self.neg: list[npt.NDArray[np.float64]] = []
        self.ids: list[npt.NDArray[np.int64]] = []
        for lo in range(0, positions.size, BLOCK):
            self.pos.append(positions[lo : lo + BLOCK].copy())
            self.neg.append(neg_p2[lo : lo + BLOCK].copy())
            self.ids.append(ids[lo : lo + BLOCK].copy())
        self._firsts: list[tuple[float, int]] = [(float(n[0]), int(i[0])) for n, i in zip(self.neg, self.ids, strict=True)]
        self._ends = np.cumsum([b.size for b in self.pos], dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self._ends[-1]) if self._ends.size else 0

    def _block_of(self, key: tuple[float, int]) -> int:
        return max(0, bisect.bisect_right(self._firsts, key) - 1)

    def _offset(self, b: int, neg: float, eid: int) -> int:
        lo = int(np.searchsorted(self.neg[b], neg, side="left"))
        hi = int(np.searchsorted(self.neg[b], neg, side="right"))
        return lo + int(np.searchsorted(self.ids[b][lo:hi], eid))

    def _set_first(self, b: int) -> None:
        self._firsts[b] = (float(self.neg[b][0]), int(self.ids[b][0]))

    def remove(self, neg: float, eid: int) -> None:
        b = self._block_of((neg, eid))
        at = self._offset(b, neg, eid)
        if at >= self.ids[b].size or self.ids[b][at] != eid:
            raise KeyError(eid)
        if self.pos[b].size == 1:
            for arrs in (self.pos, self.neg, self.ids, self._firsts):
                del arrs[b]
            return
        self.pos[b] = np.delete(self.pos[b], at)
        self.neg[b] = np.delete(self.neg[b], at)
        self.ids[b] = np.delete(self.ids[b], at)
        if at == 0:
            self._set_first(b)

    def insert(self, position: int, neg: float, eid: int) -> None:
        if not self.pos:
            self.pos, self.neg, self.ids = [np.array([position])], [np.array([neg])], [np.array([eid])]
            self._firsts = [(neg, eid)]
            return
        b = self._block_of((neg, eid))
        at = self._offset(b, neg, eid)
        self.pos[b] = np.insert(self.pos[b], at, position)
        self.neg[b] = np.insert(self.neg[b], at, neg)
        self.ids[b] = np.insert(self.ids[b], at, eid)
        if at == 0:
            self._set_first(b)
        if self.pos[b].size > 2 * BLOCK:
            half = self.pos[b].size // 2
            self.pos[b : b + 1] = [self.pos[b][:half], self.pos[b][half:]]
            self.neg[b : b + 1] = [self.neg[b][:half], self.neg[b][half:]]
            self.ids[b : b + 1] = [self.ids[b][:half], self.ids[b][half:]]
            self._firsts.insert(b + 1, (0.0, 0))
            self._set_first(b + 1)

    def apply(self, removed: list[tuple[float, int]], added: list[tuple[int, float, int]]) -> None:
        """Take out rows by their old (neg P2Value, id); put rows in at (position, neg P2Value, id)."""
        for key in removed:
            self.remove(*key)
        for position, neg, eid in added:
            self.insert(position, neg, eid)
        self._ends = np.cumsum([b.size for b in self.pos], dtype=np.int64)

    def at_ranks(self, ranks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Snapshot positions of the rows at the given 0-based ranks."""
        blocks = np.searchsorted(self._ends, ranks, side="right")
        starts = np.concatenate([[0], self._ends[:-1]])
        out = np.empty(ranks.size, dtype=np.int64)
        for j, (b, r) in enumerate(zip(blocks.tolist(), ranks.tolist(), strict=True)):
            out[j] = self.pos[b][r - starts[b]]
        return out

    def order(self) -> npt.NDArray[np.int64]:
        """All positions in rank order (tests, checks)."""
        return np.concatenate(self.pos) if self.pos else np.zeros(0, dtype=np.int64)


class IncrementalState:
    """A sum tree (proportional) or rank list (rank) for one set of sampling parameters, at one snapshot.

    ``p2`` (P2Value of every snapshot position, NaN where the filter does not admit the row) is kept per
    row so a changed row's old key is known. All access goes through ``lock``.
    """

    def __init__(self, scheme: str, exponent: float, serial: int, task_version: int,
                 member: npt.NDArray[np.bool_], p2_all: npt.NDArray[np.float64], ids: npt.NDArray[np.int64]) -> None:
        self.scheme, self.exponent = scheme, exponent
        self.serial, self.task_version = serial, task_version
        self.lock = threading.Lock()
        n = member.size
        self.p2 = np.full(max(n, 1024), np.nan)
        self.p2[:n] = np.where(member, p2_all, np.nan)
        self.n = n
        self.population = int(member.sum())
        self.tree: SumTree | None = None
        self.ranks: RankList | None = None
        if scheme == "proportional":
            self.tree = SumTree(self._weights(self.p2[:n]))
        else:
            population = np.flatnonzero(member)
            order = sampling.rank_order(p2_all[population], ids[population])
            pos = population[order]
            self.ranks = RankList(pos, -p2_all[pos], ids[pos])

    def _weights(self, p2: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        w = _pow(np.maximum(np.nan_to_num(p2, nan=0.0), sampling.P2VALUE_FLOOR), self.exponent)
        return np.where(np.isnan(p2), 0.0, w)

    def advance(self, serial: int, n: int, changed: npt.NDArray[np.int64], member: npt.NDArray[np.bool_],
                p2_changed: npt.NDArray[np.float64], ids: npt.NDArray[np.int64]) -> None:
        """Move to snapshot ``serial`` (n rows) whose rows at ``changed`` now have membership ``member`` and
        P2Value ``p2_changed``; ``ids`` is the snapshot's id column. Call with ``lock`` held."""
        if self.p2.size < n:
            grown = np.full(max(n, int(self.p2.size * 1.5)), np.nan)
            grown[: self.n] = self.p2[: self.n]
            self.p2 = grown
        self.p2[self.n : n] = np.nan
        new_p2 = np.where(member, p2_changed, np.nan)
        old_p2 = self.p2[changed]
        self.population += int((~np.isnan(new_p2)).sum()) - int((~np.isnan(old_p2)).sum())
        if self.tree is not None:
            if not self.tree.fits(n):
                self.p2[changed] = new_p2
                self.tree = SumTree(self._weights(self.p2[:n]))
            else:
                self.tree.update(changed, self._weights(new_p2))
        elif self.ranks is not None:
            was, now = ~np.isnan(old_p2), ~np.isnan(new_p2)  # NaN: not admitted by the filter
            removed = [(-float(o), int(ids[c])) for c, o in zip(changed[was].tolist(), old_p2[was].tolist(), strict=True)]
            added = [(int(c), -float(v), int(ids[c])) for c, v in zip(changed[now].tolist(), new_p2[now].tolist(), strict=True)]
            self.ranks.apply(removed, added)
        self.p2[changed] = new_p2
        self.n, self.serial = n, serial

    def draw(self, n: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(snapshot positions, P(i)) of n draws with replacement. Call with ``lock`` held."""
        if self.tree is not None:
            pos = self.tree.draw(n, rng)
            return pos, self.tree.leaves(self.n)[pos] / self.tree.total
        assert self.ranks is not None
        slots, probs = sampling.draw_ranks(self.population, self.exponent, n, rng)
        return self.ranks.at_ranks(slots), probs

    def p2values(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return self.p2[positions]

    def check(self, fresh: IncrementalState) -> None:
        """Raise AssertionError unless this state equals ``fresh`` (built from scratch on the same snapshot)."""
        assert self.population == fresh.population, (self.population, fresh.population)
        np.testing.assert_array_equal(self.p2[: self.n], fresh.p2[: fresh.n])
        if self.tree is not None:
            assert fresh.tree is not None
            np.testing.assert_array_equal(self.tree.leaves(self.n), fresh.tree.leaves(fresh.n))
            np.testing.assert_allclose(self.tree.total, fresh.tree.total, rtol=1e-9)
        else:
            assert self.ranks is not None and fresh.ranks is not None
            np.testing.assert_array_equal(self.ranks.order(), fresh.ranks.order())


def describe(state: IncrementalState) -> dict[str, Any]:
    """Sizes, for logs and tests."""
    return {"scheme": state.scheme, "serial": state.serial, "n": state.n, "population": state.population,
            "blocks": len(state.ranks.pos) if state.ranks is not None else None}
