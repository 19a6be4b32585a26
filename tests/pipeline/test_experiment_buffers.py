"""A recipe's buffer as a scope of one shared buffer service (PostgreSQL behind the real buffer app):
two scopes holding the same tasks and programs never see each other's, and a minibatch drawn for one
scope only holds that scope's programs, with the task ids the experiment knows."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from services.common.schemas.buffer import ExperienceIn, ExperienceUpdate, SampleRequest
from services.pipeline.connect import embedded_buffer
from services.pipeline.datasets.loaders import load_mbpp, select
from services.pipeline.experiments.buffers import MAX_DATASET, ScopedBuffer, scope_name
from services.pipeline.settings import Settings


def _programs(task_id: str, rates: list[float]) -> list[ExperienceIn]:
    return [ExperienceIn(task_id=task_id, program=f"def f():\n    return {i}\n", logprob=-1.0 - i, token_count=5,
                         source="m@base:beam", round=1, pass_rate=r) for i, r in enumerate(rates)]  # fmt: skip


def test_scopes_of_one_buffer_service_are_disjoint(pg_url: str, tmp_path: Path) -> None:
    tasks = select(load_mbpp().tasks, "train", 2)
    with ExitStack() as stack:
        shared = embedded_buffer(stack, Settings(data_dir=tmp_path), pg_url)
        a = ScopedBuffer(shared, scope_name("exp-1", "beam"))
        b = ScopedBuffer(shared, scope_name("exp-1", "own-p2value-rank-s0"))
        assert a.upsert_tasks(tasks).ids == [t.id for t in tasks] == b.upsert_tasks(tasks).ids
        assert a.add_experiences(_programs(tasks[0].id, [1.0, 0.0])).created == 2
        # the same programs in another scope are new rows, not duplicates of a's
        assert b.add_experiences(_programs(tasks[0].id, [1.0, 0.0, 0.5])).created == 3
        b.add_experiences(_programs(tasks[1].id, [0.0]))

        listed = a.list_experiences(task_id=tasks[0].id, limit=100).items
        assert len(listed) == 2 and {e.task_id for e in listed} == {tasks[0].id}
        assert len(b.list_experiences(limit=100).items) == 4  # no task id: the whole scope, not the service
        assert a.stats().experiences == 2 and b.stats().experiences == 4
        assert shared.stats().experiences == 6 and set(shared.stats().datasets) == {a.scope, b.scope}

        drawn = a.sample(SampleRequest(n=64, seed=1, split="train"))
        assert drawn.population == 2 and {i.task_id for i in drawn.items} == {tasks[0].id}
        assert {i.experience_id for i in drawn.items} <= {e.id for e in listed}
        assert drawn.items[0].prompt == tasks[0].prompt  # the trainer reads the original prompt X
        # a request naming another data set is still confined to the scope
        assert a.sample(SampleRequest(n=8, seed=1, dataset="mbpp")).population == 2
        # the shared service sees a scope as a data set: what a trainer job's request names
        assert shared.sample(SampleRequest(n=8, seed=1, datasets=b.datasets)).population == 4

        # judging through a scope patches the shared rows
        unjudged = a.add_experiences([ExperienceIn(task_id=tasks[1].id, program="x = 1\n", logprob=-2.0,
                                                   token_count=3, source="m@base:beam")])  # fmt: skip
        a.update_experience(unjudged.ids[0], ExperienceUpdate(pass_rate=0.25))
        judged = a.list_experiences(task_id=tasks[1].id, judged=True, limit=10).items
        assert [e.pass_rate for e in judged] == [0.25]
        assert a.get_task(tasks[1].id).id == tasks[1].id
        a.close()  # the view's close leaves the shared connection open
        assert shared.stats().experiences == 7


def test_scope_names_fit_a_data_set_and_bad_scopes_are_refused(pg_url: str, tmp_path: Path) -> None:
    long = scope_name("x" * 300, "own-p2value-rank-s0")
    assert len(long) == MAX_DATASET and long != scope_name("x" * 301, "own-p2value-rank-s0")
    assert scope_name("exp", "beam") == "exp:exp:beam"
    with ExitStack() as stack:
        shared = embedded_buffer(stack, Settings(data_dir=tmp_path), pg_url)
        for bad in ("", "a::b", "y" * (MAX_DATASET + 1)):
            with pytest.raises(ValueError):
                ScopedBuffer(shared, bad)
