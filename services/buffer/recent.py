"""The last minibatches this buffer process drew (``GET /v1/samples/recent``), for dashboards.

Kept in memory per process, bounded, newest last: a summary of each ``/v1/sample`` answer (the rule it
used and, per drawn item, experience id, P2Value and pass rate), not the programs.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime

from services.common.schemas.buffer import RecentDraw, SampleRequest, SampleResponse


class RecentDraws:
    """A thread-safe ring of the last ``size`` minibatches."""

    def __init__(self, size: int = 32) -> None:
        self._items: deque[RecentDraw] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._count = 0

    def record(self, request: SampleRequest, response: SampleResponse) -> None:
        """Remember one answered sample request."""
        with self._lock:
            self._count += 1
            self._items.append(RecentDraw(
                seq=self._count, at=datetime.now(UTC), n=request.n, scheme=request.scheme, alpha=request.alpha,
                split=request.split, population=response.population,
                experience_ids=[i.experience_id for i in response.items],
                p2values=[i.p2value for i in response.items],
                pass_rates=[i.pass_rate for i in response.items],
            ))

    def last(self, limit: int) -> list[RecentDraw]:
        """The newest ``limit`` minibatches, oldest first."""
        with self._lock:
            return list(self._items)[-limit:]
