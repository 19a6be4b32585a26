"""The in-process priority index that makes sampling from 1M experiences cheap.

Design
------
Sampling needs, for every eligible experience, six numbers: id, task (for the dataset/split filter),
source, beam group, logprob, token_count, pass_rate. The index keeps them as numpy arrays (about 56
bytes per experience: 56 MB at 1M) in an immutable :class:`Snapshot`, and never re-reads the table
while nothing changed:

1. Change marker. Every write transaction first bumps ``buffer_state.version`` (experiences) or
   ``task_version`` (tasks) and stamps the experiences it writes with that ``row_version``. The row
   lock serialises writers, so versions commit in order. Each sample request reads the two counters
   (one primary-key read, well under a millisecond); equal counters mean the snapshot is current. This
   works across any number of buffer processes sharing one database.
2. Incremental refresh. When ``version`` moved, only rows with ``row_version`` above the snapshot's are
   fetched (inserts and PATCHed pass rates) and merged copy-on-write into new arrays (the old snapshot
   stays valid for requests still using it). When ``task_version`` moved, the small task map
   (task seq -> dataset, split) is reloaded. A cold process loads everything once (about 1-3 s at 1M).
3. Prepared distributions. The P2Value of a population and its sampling distribution depend only on
   (snapshot, filter, scheme, possibility, alpha, priority_exponent); the cumulative weights (and, for
   ``rank``, the sort by P2Value) are built once and kept in a small LRU, so a repeated request costs
   one ``searchsorted`` of n draws plus one SELECT of the n drawn rows (by primary key).
4. Small writes stay cheap. Per-row caches (``sequence`` / ``token_mean`` possibility, dataset and
   split codes) are carried to the new snapshot, recomputing only the changed positions. For ``rank``
   the previous sorted order is reused: changed rows are taken out and merged back at their new
   places by binary search (O(N) copies instead of an O(N log N) sort). The rank weights 1/r^e and
   their cumulative sum depend only on (N, e) and are cached. ``proportional`` re-derives its cumsum
   (O(N) vector work). ``beam_softmax`` is recomputed (it depends on whole beam groups).

Costs at 1M (2 CPU cores, see bench/buffer.py): a cached request is dominated by fetching the n
programs and HTTP; the first request after a write pays the refresh plus O(N) vector work; a cold
process pays one full load (binary COPY on PostgreSQL). The naive alternative, re-reading and
re-scoring the table on every request, costs seconds at 1M.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from . import priority as sampling
from .incremental import IncrementalState
from .loader import ROW_DTYPE, TaskMap, load_rows_versioned, load_task_map, read_markers
from .tables import key64

COLUMNS: tuple[str, ...] = tuple(ROW_DTYPE.names or ())
HISTORY = 64
"""Snapshots whose changed positions are remembered, so an incremental state several snapshots behind
(other parameters were sampled in between) catches up without a rebuild."""


def _grow(arr: npt.NDArray[Any], needed: int) -> npt.NDArray[Any]:
    """``arr`` if it can hold ``needed`` items, else a bigger copy (x1.5 amortised growth)."""
    if arr.size >= needed:
        return arr
    out = np.empty(max(needed, int(arr.size * 1.5) + 1024), dtype=arr.dtype)
    out[: arr.size] = arr
    return out


def columns_from_rows(rows: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
    """Contiguous per-column arrays, with spare capacity so later inserts append in place."""
    cols = {}
    for name in COLUMNS:
        arr = np.empty(rows.size + max(1024, rows.size // 4), dtype=ROW_DTYPE[name])
        arr[: rows.size] = rows[name]
        cols[name] = arr
    return cols


@dataclass(frozen=True)
class Snapshot:
    """All experiences as columns sorted by id, at one (version, task_version).

    ``cols`` (and per-row ``cache`` arrays) may be longer than ``n``: the tail is spare capacity that
    a newer snapshot appends into in place; a snapshot only ever reads its first ``n`` items, and
    an updated value is written copy-on-write, so a snapshot never changes once published.
    """

    version: int
    tasks: TaskMap
    n: int
    cols: dict[str, npt.NDArray[Any]]
    serial: int = 0
    parent_serial: int | None = None
    changed: npt.NDArray[np.int64] | None = None  # positions new or updated since the parent
    cache: dict[str, npt.NDArray[Any]] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[int, int]:
        return (self.version, self.tasks.task_version)

    def col(self, name: str) -> npt.NDArray[Any]:
        """The first n values of one column."""
        return self.cols[name][: self.n]

    @property
    def rows(self) -> npt.NDArray[Any]:
        """A structured copy of all rows (for tests and the rare re-sort; not on the hot path)."""
        out = np.empty(self.n, dtype=ROW_DTYPE)
        for name in COLUMNS:
            out[name] = self.col(name)
        return out

    @property
    def pass_rate(self) -> npt.NDArray[np.float64]:
        return self.col("pass_rate")

    def possibility(self, mode: str) -> npt.NDArray[np.float64]:
        """P(t) of every experience in the given mode, computed once per snapshot (or carried over)."""
        arr = self.cache.get(mode)
        if arr is None:
            arr = sampling.possibility(mode, self.col("logprob"), self.col("token_count"), self.col("group_key"))
            self.cache[mode] = arr
        return arr[: self.n]

    def dataset_codes(self) -> npt.NDArray[np.int32]:
        """Dataset code of every experience (via its task)."""
        arr = self.cache.get("dataset_code")
        if arr is None:
            arr = _lookup(self.tasks.dataset_code, self.col("task_seq"))
            self.cache["dataset_code"] = arr
        return arr[: self.n]

    def split_codes(self) -> npt.NDArray[np.int32]:
        """Split code of every experience (via its task)."""
        arr = self.cache.get("split_code")
        if arr is None:
            arr = _lookup(self.tasks.split_code, self.col("task_seq"))
            self.cache["split_code"] = arr
        return arr[: self.n]

    def mask(
        self,
        *,
        dataset: str | tuple[str, ...] | None,
        split: str | None,
        source: str | None,
        include_unjudged: bool,
    ) -> npt.NDArray[np.bool_]:
        """Which experiences a filter admits (``dataset``: one name, or any of several)."""
        keep = np.ones(self.n, dtype=bool)
        if isinstance(dataset, tuple):
            keep &= np.isin(self.dataset_codes(), [self.tasks.datasets.get(d, -2) for d in dataset])
        elif dataset is not None:
            keep &= self.dataset_codes() == self.tasks.datasets.get(dataset, -2)
        if split is not None:
            keep &= self.split_codes() == self.tasks.splits.get(split, -2)
        if source is not None:
            keep &= self.col("source_key") == key64(source)
        if not include_unjudged:
            keep &= ~np.isnan(self.pass_rate)
        return keep


def _mask_at(
    snap: Snapshot,
    at: npt.NDArray[np.int64],
    *,
    dataset: str | tuple[str, ...] | None,
    split: str | None,
    source: str | None,
    include_unjudged: bool,
) -> npt.NDArray[np.bool_]:
    """:meth:`Snapshot.mask` at the positions ``at`` only (O(len(at)))."""
    seq = snap.col("task_seq")[at]
    keep = np.ones(at.size, dtype=bool)
    if isinstance(dataset, tuple):
        keep &= np.isin(_lookup(snap.tasks.dataset_code, seq), [snap.tasks.datasets.get(d, -2) for d in dataset])
    elif dataset is not None:
        keep &= _lookup(snap.tasks.dataset_code, seq) == snap.tasks.datasets.get(dataset, -2)
    if split is not None:
        keep &= _lookup(snap.tasks.split_code, seq) == snap.tasks.splits.get(split, -2)
    if source is not None:
        keep &= snap.col("source_key")[at] == key64(source)
    if not include_unjudged:
        keep &= ~np.isnan(snap.pass_rate[at])
    return keep


def _lookup(codes: npt.NDArray[np.int32], seq: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    out = np.full(seq.shape, -1, dtype=np.int32)
    ok = (seq >= 0) & (seq < codes.size)
    out[ok] = codes[seq[ok]]
    return out


class StaleState(Exception):
    """The incremental state moved to a newer snapshot between preparing and drawing: prepare again."""


@dataclass(frozen=True)
class Prepared:
    """A population (positions into the snapshot) and its sampling distribution.

    Either a full build (``positions``, ``p2value``, ``distribution``) or a view of an
    :class:`~services.buffer.incremental.IncrementalState` at snapshot ``serial`` (``state``), whose
    ``positions`` / ``p2value`` are materialised only when asked (tests), never on the request path.
    """

    _positions: npt.NDArray[np.int64] | None  # snapshot positions, in rank order for ``rank``
    _p2value: npt.NDArray[np.float64] | None
    distribution: sampling.Distribution | None  # over indices into ``positions``
    serial: int = 0  # the snapshot it was built on
    task_version: int = 0
    state: IncrementalState | None = None

    def _state_now(self) -> IncrementalState:
        assert self.state is not None
        if self.state.serial != self.serial:
            raise StaleState()
        return self.state

    @property
    def positions(self) -> npt.NDArray[np.int64]:
        if self.state is None:
            assert self._positions is not None
            return self._positions
        with self.state.lock:
            st = self._state_now()
            if st.ranks is not None:
                return st.ranks.order()
            return np.flatnonzero(~np.isnan(st.p2[: st.n]))

    @property
    def p2value(self) -> npt.NDArray[np.float64]:
        if self.state is None:
            assert self._p2value is not None
            return self._p2value
        positions = self.positions
        return self.state.p2[positions]

    @property
    def size(self) -> int:
        if self.state is not None:
            return self.state.population
        assert self.distribution is not None
        return self.distribution.size

    def draw(self, n: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """n draws with replacement: (snapshot positions, P(i), P2Value); :class:`StaleState` when the
        incremental state has moved past this snapshot."""
        if self.state is not None:
            with self.state.lock:
                st = self._state_now()
                pos, probs = st.draw(n, rng)
                return pos, probs, st.p2[pos]
        assert self.distribution is not None and self._positions is not None and self._p2value is not None
        slots = self.distribution.draw(n, rng)
        local = self.distribution.order[slots]
        return self._positions[local], self.distribution.probability(slots), self._p2value[local]


def merge_rows(
    base: npt.NDArray[Any], delta: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64] | None]:
    """Copy-on-write merge of changed/new rows (both sorted by id) into base.

    Returns the merged rows and the positions that are new or updated; positions of untouched rows
    do not move (new ids append), except in the rare case of an id below the newest one, where the
    rows are re-sorted and the changed positions are None (callers then rebuild from scratch).
    """
    if delta.size == 0:
        return base, np.empty(0, dtype=np.int64)
    pos = np.searchsorted(base["id"], delta["id"])
    inside = pos < base.size
    existing = np.zeros(delta.size, dtype=bool)
    existing[inside] = base["id"][pos[inside]] == delta["id"][inside]
    merged = base.copy() if existing.any() else base
    if existing.any():
        merged[pos[existing]] = delta[existing]
    fresh = delta[~existing]
    if fresh.size == 0:
        return merged, pos[existing].astype(np.int64)
    out = np.concatenate([merged, fresh])
    if base.size and fresh["id"][0] < base["id"][-1]:
        return out[np.argsort(out["id"], kind="stable")], None
    changed = np.concatenate([pos[existing], np.arange(base.size, out.size)]).astype(np.int64)
    return out, changed


def apply_delta(
    parent: Snapshot, delta: npt.NDArray[Any]
) -> tuple[dict[str, npt.NDArray[Any]], int, npt.NDArray[np.int64] | None]:
    """The parent's columns with the delta rows applied: (columns, n, changed positions or None).

    Updates are written copy-on-write (only the columns whose values differ, in practice pass_rate);
    new rows, whose ids are above every stored id, are appended in place into spare capacity. An
    id below the newest (not produced by this service's writers) falls back to a full re-sort.
    """
    n = parent.n
    ids = parent.col("id")
    if delta.size and n and delta["id"].min() <= ids[-1]:
        pos = np.searchsorted(ids, delta["id"])
        inside = pos < n
        existing = np.zeros(delta.size, dtype=bool)
        existing[inside] = ids[pos[inside]] == delta["id"][inside]
    else:
        pos = np.full(delta.size, n, dtype=np.int64)
        existing = np.zeros(delta.size, dtype=bool)
    fresh = delta[~existing]
    if fresh.size and n and fresh["id"][0] <= ids[-1]:
        merged, _ = merge_rows(parent.rows, delta)
        return columns_from_rows(merged), merged.size, None
    cols = dict(parent.cols)
    updated = pos[existing].astype(np.int64)
    if updated.size:
        rows = delta[existing]
        for name in COLUMNS:
            if not np.array_equal(cols[name][updated], rows[name], equal_nan=rows[name].dtype.kind == "f"):
                arr = cols[name].copy()
                arr[updated] = rows[name]
                cols[name] = arr
    k = fresh.size
    if k:
        for name in COLUMNS:
            arr = _grow(cols[name], n + k)
            arr[n : n + k] = fresh[name]
            cols[name] = arr
    return cols, n + k, np.concatenate([updated, np.arange(n, n + k, dtype=np.int64)])


PER_ROW_CACHES = ("sequence", "token_mean", "dataset_code", "split_code")
"""Cached per-row arrays that depend on nothing but the row (and the task map): carried over to a
new snapshot by recomputing only the changed positions. ``beam_softmax`` depends on the whole beam
group, so it is recomputed."""


def _carry_caches(parent: Snapshot, child: Snapshot) -> None:
    """Fill the child's per-row caches from the parent's, recomputing only the changed positions
    (appended in place into spare capacity; an updated value that differs is written copy-on-write)."""
    changed = child.changed
    if changed is None:
        return
    same_tasks = parent.tasks is child.tasks
    for name in PER_ROW_CACHES:
        old = parent.cache.get(name)
        if old is None or (name.endswith("_code") and not same_tasks):
            continue
        if changed.size == 0:
            child.cache[name] = old
            continue
        task_seq = child.col("task_seq")[changed]
        if name.endswith("_code"):
            codes = child.tasks.dataset_code if name == "dataset_code" else child.tasks.split_code
            values: npt.NDArray[Any] = _lookup(codes, task_seq)
        else:
            values = sampling.possibility(name, child.col("logprob")[changed], child.col("token_count")[changed])
        inside = changed < parent.n
        if inside.any() and not np.array_equal(old[changed[inside]], values[inside]):
            old = old.copy()
        out = _grow(old, child.n)
        out[changed] = values
        child.cache[name] = out


class PriorityIndex:
    """Keeps a current :class:`Snapshot` and an LRU of prepared distributions (thread-safe)."""

    def __init__(self, cache_entries: int = 8) -> None:
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Prepared] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._states: OrderedDict[tuple[Any, ...], IncrementalState] = OrderedDict()
        self._history: OrderedDict[int, tuple[int | None, npt.NDArray[np.int64] | None]] = OrderedDict()
        self._serial = 0
        self.cache_entries = cache_entries
        self.full_loads = 0
        self.incremental_loads = 0
        self.incremental_prepares = 0

    def invalidate(self) -> None:
        """Forget everything (the next request reloads)."""
        with self._lock, self._cache_lock:
            self._snapshot = None
            self._cache.clear()
            self._states.clear()
            self._history.clear()

    def current(self, conn: Connection | Session) -> Snapshot:
        """The snapshot matching the database's change markers, refreshed if they moved."""
        version, task_version = read_markers(conn)
        snap = self._snapshot
        if snap is not None and snap.key == (version, task_version):
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap.key == (version, task_version):
                return snap
            changed: npt.NDArray[np.int64] | None = None
            if snap is None:
                rows, top = load_rows_versioned(conn)
                cols, n = columns_from_rows(rows), rows.size
                self.full_loads += 1
            elif version != snap.version:
                delta, top = load_rows_versioned(conn, after_version=snap.version)
                cols, n, changed = apply_delta(snap, delta)
                self.incremental_loads += 1
            else:
                cols, n, changed, top = snap.cols, snap.n, np.empty(0, dtype=np.int64), 0
            # Rows read after the markers may carry newer versions: all versions up to the highest
            # the same statement read have committed (writers are serialised), so the snapshot is at
            # least that new; never newer (a later statement could see rows this one did not).
            version = max(version, top)
            tasks = snap.tasks if snap is not None and snap.tasks.task_version == task_version else None
            # the rows the parent's task map already covered need no check: only the changed ones (O(k), not O(N))
            seqs = cols["task_seq"][changed] if (changed is not None and tasks is not None) else cols["task_seq"][:n]
            max_seq = int(seqs.max()) if seqs.size else -1
            if tasks is None or max_seq >= tasks.dataset_code.size:
                tasks = load_task_map(conn, task_version)
            self._serial += 1
            fresh = Snapshot(
                version=version,
                tasks=tasks,
                n=n,
                cols=cols,
                serial=self._serial,
                parent_serial=snap.serial if snap is not None else None,
                changed=changed,
            )
            if snap is not None:
                _carry_caches(snap, fresh)
                if changed is not None and changed.size == 0 and "beam_softmax" in snap.cache:
                    fresh.cache["beam_softmax"] = snap.cache["beam_softmax"]
            self._history[fresh.serial] = (fresh.parent_serial, changed)
            while len(self._history) > HISTORY:
                self._history.popitem(last=False)
            self._snapshot = fresh
            return fresh

    def changed_between(self, old_serial: int, snap: Snapshot) -> npt.NDArray[np.int64] | None:
        """Positions changed from snapshot ``old_serial`` to ``snap`` (None: not known, rebuild)."""
        parts: list[npt.NDArray[np.int64]] = []
        serial: int | None = snap.serial
        with self._lock:
            while serial is not None and serial != old_serial:
                entry = self._history.get(serial)
                if entry is None or entry[1] is None:
                    return None
                parts.append(entry[1])
                serial = entry[0]
        if serial != old_serial:
            return None
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def _incremental(self, snap: Snapshot, params: tuple[Any, ...], mask_kw: dict[str, Any]) -> Prepared | None:
        """The prepared view of this parameters' incremental state, advanced to ``snap`` (built on first use);
        None when the state is ahead of ``snap`` (a request still on an older snapshot: full build)."""
        scheme, possibility, alpha, exponent = params[:4]
        with self._cache_lock:
            state = self._states.get(params)
            if state is not None:
                self._states.move_to_end(params)
        if state is not None and state.task_version == snap.tasks.task_version:
            with state.lock:
                if state.serial == snap.serial:
                    return Prepared(None, None, None, snap.serial, snap.tasks.task_version, state)
                if state.serial > snap.serial:
                    return None
                changed = self.changed_between(state.serial, snap)
                if changed is not None and changed.size <= max(1000, snap.n // 20):
                    member = _mask_at(snap, changed, **mask_kw)
                    p2 = sampling.p2value(alpha, snap.possibility(possibility)[changed], snap.pass_rate[changed])
                    state.advance(snap.serial, snap.n, changed, member, p2, snap.col("id"))
                    self.incremental_prepares += 1
                    return Prepared(None, None, None, snap.serial, snap.tasks.task_version, state)
        member = snap.mask(**mask_kw)
        p2_all = sampling.p2value(alpha, snap.possibility(possibility), snap.pass_rate)
        state = IncrementalState(scheme, exponent, snap.serial, snap.tasks.task_version, member, p2_all, snap.col("id"))
        with self._cache_lock:
            self._states[params] = state
            while len(self._states) > max(1, self.cache_entries):
                self._states.popitem(last=False)
        return Prepared(None, None, None, snap.serial, snap.tasks.task_version, state)

    def prepared(
        self,
        snap: Snapshot,
        *,
        scheme: str,
        possibility: str,
        alpha: float,
        exponent: float,
        dataset: str | tuple[str, ...] | None,
        split: str | None,
        source: str | None,
        include_unjudged: bool,
    ) -> Prepared:
        """The population and distribution for these parameters.

        ``rank`` and ``proportional`` (with a per-row possibility) use an incremental state
        (:mod:`.incremental`) that a write of k rows moves forward in O(k log N); ``uniform`` and
        ``beam_softmax`` (whose possibility depends on whole beam groups) are built in O(N) and kept in a
        small LRU per snapshot.
        """
        params = (scheme, possibility, alpha, exponent, dataset, split, source, include_unjudged)
        mask_kw: dict[str, Any] = {"dataset": dataset, "split": split, "source": source,
                                   "include_unjudged": include_unjudged}
        if scheme in ("rank", "proportional") and possibility != "beam_softmax" and self.cache_entries > 0:
            inc = self._incremental(snap, params, mask_kw)
            if inc is not None:
                return inc
        key = (snap.serial, *params)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        mask = snap.mask(**mask_kw)
        positions = np.flatnonzero(mask)
        ids = snap.col("id")
        p2 = sampling.p2value(alpha, snap.possibility(possibility)[positions], snap.pass_rate[positions])
        if scheme == "rank":
            order = sampling.rank_order(p2, ids[positions])
            positions, p2 = positions[order], p2[order]
            dist = sampling.rank_distribution(positions.size, exponent)
        else:
            dist = sampling.build_distribution(scheme, p2, ids[positions], exponent)
        prepared = Prepared(positions, p2, dist, snap.serial, snap.tasks.task_version)
        if self.cache_entries > 0:
            with self._cache_lock:
                self._cache[key] = prepared
                while len(self._cache) > self.cache_entries:
                    self._cache.popitem(last=False)
        return prepared
