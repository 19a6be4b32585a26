"""Prioritized replay over the priority index: ``sample`` (Eq. 6-8) and ``stats``; no FastAPI import."""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from services.common.errors import ValidationError
from services.common.schemas.buffer import (
    DatasetStats,
    Histogram,
    SampleRequest,
    SampleResponse,
    StatsResponse,
)

from .index import PriorityIndex, StaleState
from .loader import TaskMap
from .service import CHUNK, check_text, histogram
from .settings import Settings
from .tables import Task

STALE_RETRIES = 3


def _fetch(session: Session, ids: list[int], tasks: TaskMap) -> dict[int, tuple[str, str, str, int | None]]:
    """id -> (task_id, program, prompt, weights_version) of the drawn experiences."""
    out: dict[int, tuple[str, str, str, int | None]] = {}
    if session.get_bind().dialect.name == "postgresql":
        # The driver's cursor, one array parameter sent as its text form ('{1,2,3}'): a short statement
        # psycopg prepares once, no per-element adaptation of a Python list, no per-row Result objects.
        # Prompts come from the task map's cache (per task_version), read only for tasks not seen yet.
        raw = session.connection().connection.driver_connection
        assert raw is not None
        rows = []
        with raw.cursor() as cur:
            for start in range(0, len(ids), CHUNK):
                part = "{" + ",".join(map(str, ids[start : start + CHUNK])) + "}"
                cur.execute("SELECT id, task_id, program, weights_version FROM experiences WHERE id = ANY(%s::bigint[])", (part,))
                rows.extend(cur.fetchall())
            prompts = tasks.prompts
            missing = sorted({r[1] for r in rows} - prompts.keys())
            if missing:
                cur.execute("SELECT id, prompt FROM tasks WHERE id = ANY(%s)", (missing,))
                prompts.update(cur.fetchall())
        for eid, task_id, program, version in rows:
            out[int(eid)] = (task_id, program, prompts[task_id], None if version is None else int(version))
        return out
    head = "SELECT e.id, e.task_id, e.program, t.prompt, e.weights_version FROM experiences e JOIN tasks t ON t.id = e.task_id "
    sql = text(head + "WHERE e.id IN :ids").bindparams(bindparam("ids", expanding=True))
    for start in range(0, len(ids), CHUNK):
        for eid, task_id, program, prompt, version in session.execute(sql, {"ids": ids[start : start + CHUNK]}):
            out[int(eid)] = (task_id, program, prompt, None if version is None else int(version))
    return out


def sample(*, session: Session, index: PriorityIndex, request: SampleRequest, settings: Settings) -> SampleResponse:
    """Draw n experiences with replacement, P(i) per Eq. 7 (proportional) or Eq. 8 (rank), or uniform.

    An empty population (nothing matches the filter) is a 200 with no items and ``population`` 0.
    """
    if request.n > settings.max_sample_n:
        raise ValidationError(f"n must be between 1 and {settings.max_sample_n}", param="n")
    for name in ("dataset", "split", "source"):
        value = getattr(request, name)
        if value is not None:
            check_text(value, name)
    for i, name in enumerate(request.datasets or []):
        check_text(name, f"datasets[{i}]")
    dataset: str | tuple[str, ...] | None = request.dataset
    if request.datasets is not None:  # any of these data sets (and ``dataset`` too, when both are given)
        names = set(request.datasets) & ({request.dataset} if request.dataset is not None else set(request.datasets))
        dataset = tuple(sorted(names))
    rng = np.random.default_rng(request.seed)
    with session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Only reads follow, each under its own READ COMMITTED snapshot in a transaction too: in autocommit
            # mode the driver sends no BEGIN and no COMMIT (two round trips of a ~10 ms request).
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        for attempt in range(STALE_RETRIES + 1):
            snap = index.current(session)
            prepared = index.prepared(
                snap,
                scheme=request.scheme,
                possibility=request.possibility,
                alpha=request.alpha,
                exponent=request.priority_exponent,
                dataset=dataset,
                split=request.split,
                source=request.source,
                include_unjudged=request.include_unjudged,
            )
            if prepared.size == 0:
                return SampleResponse(items=[], population=0)
            try:
                chosen, probs, chosen_p2 = prepared.draw(request.n, rng)
                break
            except StaleState:  # another request moved the incremental state on meanwhile
                if attempt == STALE_RETRIES:
                    raise
                rng = np.random.default_rng(request.seed)
        population = prepared.size
        ids = snap.col("id")[chosen].tolist()
        chosen_pass_rate = snap.pass_rate[chosen]
        chosen_tokens = snap.col("token_count")[chosen]
        chosen_possibility = snap.possibility(request.possibility)[chosen]
        found = _fetch(session, sorted(set(ids)), snap.tasks)
    # plain Python floats/ints in one pass each (not per element through numpy scalars), and one
    # validation of the whole answer in pydantic's core (a Python constructor per item costs 3x more)
    columns = zip(ids, chosen_p2.tolist(), probs.tolist(), chosen_pass_rate.tolist(), chosen_possibility.tolist(),
                  chosen_tokens.tolist(), strict=True)
    items = []
    for eid, p2v, prob, pass_rate, poss, tokens in columns:
        task_id, program, prompt, version = found[eid]
        items.append({
            "experience_id": eid,
            "task_id": task_id,
            "prompt": prompt,
            "program": program,
            "p2value": p2v,
            "sample_probability": prob,
            "pass_rate": None if math.isnan(pass_rate) else pass_rate,
            "possibility": poss,
            "token_count": tokens,
            "weights_version": version,
        })
    return SampleResponse.model_validate({"items": items, "population": population})


def stats(*, session: Session, index: PriorityIndex, dataset: str | None, settings: Settings) -> StatsResponse:
    """Counts, pass-rate and P2Value (stats_alpha, stats_possibility) distributions per dataset."""
    if dataset is not None:
        check_text(dataset, "dataset")
    with session.begin():
        snap = index.current(session)
        task_counts: dict[str, int] = {
            str(d): int(c) for d, c in session.execute(select(Task.dataset, func.count()).group_by(Task.dataset))
        }
    pass_rate = snap.pass_rate
    judged_mask = ~np.isnan(pass_rate)
    p2 = np.asarray(
        settings.stats_alpha * snap.possibility(settings.stats_possibility)
        + (1.0 - settings.stats_alpha) * np.nan_to_num(pass_rate, nan=0.0)
    )
    codes = snap.dataset_codes()
    datasets: dict[str, DatasetStats] = {}
    names = sorted(set(task_counts) | set(snap.tasks.datasets))
    for name in names:
        if dataset is not None and name != dataset:
            continue
        sel = codes == snap.tasks.datasets.get(name, -2)
        judged = sel & judged_mask
        pr = pass_rate[judged]
        edges, pcounts = histogram(pr)
        p2_edges, p2_counts = histogram(p2[judged])
        datasets[name] = DatasetStats(
            tasks=task_counts.get(name, 0),
            experiences=int(sel.sum()),
            judged=int(judged.sum()),
            mean_pass_rate=float(pr.mean()) if pr.size else None,
            fully_passing=int((pr >= 1.0).sum()),
            pass_rate_histogram=Histogram(edges=edges, counts=pcounts),
            p2value_histogram=Histogram(edges=p2_edges, counts=p2_counts),
        )
    if dataset is not None:  # the totals of what was asked for, not of the whole buffer
        return StatsResponse(
            tasks=sum(d.tasks for d in datasets.values()),
            experiences=sum(d.experiences for d in datasets.values()),
            judged=sum(d.judged for d in datasets.values()),
            alpha=settings.stats_alpha,
            possibility=settings.stats_possibility,
            datasets=datasets,
        )
    return StatsResponse(
        tasks=sum(task_counts.values()),
        experiences=snap.n,
        judged=int(judged_mask.sum()),
        alpha=settings.stats_alpha,
        possibility=settings.stats_possibility,
        datasets=datasets,
    )
