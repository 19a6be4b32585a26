"""A recipe's buffer inside a shared buffer service: a scoped view of one :class:`BufferClient`.

Embedded, each buffer of an experiment (the shared beam buffer, a recipe's own copy) is its own SQLite
file. Against the full stack there is one buffer service, so each of them becomes a *scope* in it: its
tasks are stored again under ``<scope>::<task id>`` in a data set named ``<scope>``, its programs refer to
those ids, and every minibatch the trainer draws for it names ``datasets=[scope]``. The view maps ids back
and forth, so the experiment's code (and :mod:`..run.steps`) cannot tell a scope from a file; the trainer
service needs nothing new: a scope is a data set.
"""

from __future__ import annotations

import hashlib
from typing import Any

from services.common.client import BufferClient
from services.common.schemas.buffer import (
    ExperienceCreateResponse,
    ExperienceIn,
    ExperienceList,
    SampleRequest,
    SampleResponse,
    StatsResponse,
    TaskIn,
    TaskOut,
    TaskUpsertResponse,
)

SEP = "::"
MAX_DATASET = 128  # TaskIn.dataset's limit


def scope_name(experiment: str, buffer: str) -> str:
    """``exp:<experiment>:<buffer>``, shortened with a digest when longer than a data set name may be."""
    name = f"exp:{experiment}:{buffer}"
    if len(name) <= MAX_DATASET:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: MAX_DATASET - len(digest) - 1]}~{digest}"


class ScopedBuffer(BufferClient):
    """``inner``'s service seen through one scope (shares ``inner``'s connection; closing it is a no-op)."""

    def __init__(self, inner: BufferClient, scope: str) -> None:
        if not 0 < len(scope) <= MAX_DATASET or SEP in scope:
            raise ValueError(f"bad buffer scope {scope!r}")
        super().__init__(client=inner.http, retry_s=inner.retry_s)
        self.scope = scope
        self.prefix = scope + SEP

    @property
    def datasets(self) -> list[str]:
        """What a minibatch request for this buffer names."""
        return [self.scope]

    def _in(self, task_id: str) -> str:
        return self.prefix + task_id

    def _out(self, task_id: str) -> str:
        if not task_id.startswith(self.prefix):  # cannot happen through this view; never hand it on silently
            raise ValueError(f"task {task_id!r} is outside scope {self.scope!r}")
        return task_id[len(self.prefix) :]

    def upsert_tasks(self, tasks: list[TaskIn]) -> TaskUpsertResponse:
        scoped = [t.model_copy(update={"id": self._in(t.id), "dataset": self.scope}) for t in tasks]
        res = super().upsert_tasks(scoped)
        return res.model_copy(update={"ids": [self._out(i) for i in res.ids]})

    def get_task(self, task_id: str) -> TaskOut:
        task = super().get_task(self._in(task_id))
        return task.model_copy(update={"id": self._out(task.id)})

    def add_experiences(self, items: list[ExperienceIn]) -> ExperienceCreateResponse:
        return super().add_experiences([e.model_copy(update={"task_id": self._in(e.task_id)}) for e in items])

    def list_experiences(self, **params: Any) -> ExperienceList:
        if params.get("task_id") is not None:
            params["task_id"] = self._in(params["task_id"])
        else:
            params["dataset"] = self.scope
        res = super().list_experiences(**params)
        return res.model_copy(
            update={"items": [e.model_copy(update={"task_id": self._out(e.task_id)}) for e in res.items]}
        )

    def sample(self, req: SampleRequest) -> SampleResponse:
        res = super().sample(req.model_copy(update={"dataset": None, "datasets": self.datasets}))
        return res.model_copy(
            update={"items": [i.model_copy(update={"task_id": self._out(i.task_id)}) for i in res.items]}
        )

    def stats(self, dataset: str | None = None) -> StatsResponse:
        return super().stats(self.scope)

    def close(self) -> None:
        """The connection belongs to the shared client."""
