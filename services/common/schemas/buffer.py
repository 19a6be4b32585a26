"""Buffer wire models: tasks, experiences, prioritized sampling and stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .judge import TestSpec
from .types import Count, Real, StorableModel

Scheme = Literal["rank", "proportional", "uniform"]
Possibility = Literal["sequence", "token_mean", "beam_softmax"]
DEFAULT_POSSIBILITY: Possibility = "token_mean"
"""The one default everywhere: exp(mean token log-probability), comparable across lengths."""


class TaskIn(StorableModel):
    """A task (X, S): prompt X and its tests S."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=512)
    dataset: str = Field(min_length=1, max_length=128)
    split: str = Field("train", min_length=1, max_length=64)
    prompt: str = Field(max_length=1_000_000)
    tests: TestSpec
    difficulty: str | None = Field(None, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskOut(TaskIn):
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TaskUpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskIn] = Field(min_length=1, max_length=10_000)


class TaskUpsertResponse(BaseModel):
    ids: list[str]
    created: int = Field(ge=0)
    updated: int = Field(ge=0)


class TaskList(BaseModel):
    items: list[TaskOut]
    total: int = Field(ge=0)


class ExperienceIn(StorableModel):
    """A sampled program t with its probability P(t) (Eq. 3); pass_rate may come later by PATCH."""

    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(min_length=1, max_length=512)
    program: str = Field(max_length=1_000_000)
    logprob: Real = Field(le=0.0, description="Sum of token log-probabilities of the program.")
    token_count: Count = Field(ge=0, le=1_000_000)
    probability: Real | None = Field(
        None, ge=0.0, le=1.0, description="exp(logprob); derived from logprob when omitted."
    )
    source: str = Field("unknown", min_length=1, max_length=512, description="model name@checkpoint")
    round: Count = Field(0, ge=0, le=1_000_000)
    generation: str | None = Field(
        None, max_length=128, description="Groups the k beams of one generation (beam_softmax)."
    )
    weights_version: Count | None = Field(
        None, ge=0, le=2**62, description="The generator's weights version that sampled the program "
        "(`weights_version` of its generate response); null when unknown."
    )
    pass_rate: Real | None = Field(None, ge=0.0, le=1.0)
    judge: dict[str, Any] | None = None


class ExperienceCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ExperienceIn] = Field(min_length=1, max_length=100_000)


class ExperienceCreateResponse(BaseModel):
    ids: list[int]
    created: int = Field(ge=0, description="How many of ids are new rows.")


class ExperienceUpdate(StorableModel):
    """The testing phase (Eq. 5)."""

    model_config = ConfigDict(extra="forbid")
    pass_rate: Real = Field(ge=0.0, le=1.0)
    judge: dict[str, Any] | None = None


class ExperienceOut(BaseModel):
    id: int
    task_id: str
    program: str
    logprob: float
    token_count: int
    probability: float
    pass_rate: float | None
    judge: dict[str, Any] | None
    source: str
    round: int
    generation: str | None
    weights_version: int | None = None
    created_at: datetime
    judged_at: datetime | None = None


class ExperienceList(BaseModel):
    items: list[ExperienceOut]
    total: int = Field(ge=0)


class ReplayRule(StorableModel):
    """How programs are replayed (Eq. 6-8): the one model of the four knobs, used by :class:`SampleRequest`,
    a run's configuration and an experiment's variants (each extends it, so the JSON stays flat)."""

    model_config = ConfigDict(extra="forbid")
    scheme: Scheme = "rank"
    alpha: Real = Field(0.5, ge=0.0, le=1.0, description="Weight of the possibility in P2Value (Eq. 6).")
    priority_exponent: Real = Field(1.0, ge=0.0, le=10.0, description="Exponent e of Eq. 7.")
    possibility: Possibility = DEFAULT_POSSIBILITY

    def replay_rule(self) -> ReplayRule:
        """Just the four replay fields (of a subclass such as a run configuration)."""
        return ReplayRule.model_validate(self.model_dump(include=set(ReplayRule.model_fields)))


class SampleRequest(ReplayRule):
    """PPER minibatch request (Eq. 6-8), sampled with replacement."""

    model_config = ConfigDict(extra="forbid")
    n: Count = Field(64, ge=1, description="Minibatch size; at most the service's configured maximum.")
    dataset: str | None = Field(None, max_length=128)
    datasets: list[str] | None = Field(
        None, max_length=64, description="Any of these data sets (a run over several draws from its own only)."
    )
    split: str | None = Field(None, max_length=64)
    source: str | None = Field(None, max_length=512)
    include_unjudged: bool = Field(False, description="Unjudged experiences count with pass_rate 0.")
    seed: Count | None = Field(None, ge=0, le=2**63 - 1)


class SampledItem(BaseModel):
    experience_id: int
    task_id: str
    prompt: str
    program: str
    p2value: float
    sample_probability: float = Field(gt=0.0, le=1.0)
    pass_rate: float | None = None
    possibility: float | None = None
    token_count: int | None = None
    weights_version: int | None = Field(None, description="Weights version that sampled the program.")


class SampleResponse(BaseModel):
    items: list[SampledItem]
    population: int = Field(ge=0, description="Eligible experiences the minibatch was drawn from.")


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class DatasetStats(BaseModel):
    tasks: int
    experiences: int
    judged: int
    mean_pass_rate: float | None
    fully_passing: int
    pass_rate_histogram: Histogram
    p2value_histogram: Histogram


class StatsResponse(BaseModel):
    tasks: int
    experiences: int
    judged: int
    alpha: float
    possibility: Possibility
    datasets: dict[str, DatasetStats]


class GroupStats(BaseModel):
    """Experiences of one (round, source): how many, how many judged, their mean pass rate."""

    round: int
    source: str
    experiences: int
    judged: int
    mean_pass_rate: float | None


class GroupStatsResponse(BaseModel):
    """``GET /v1/stats/groups``: programs per round and source."""

    groups: list[GroupStats]


class RecentDraw(BaseModel):
    """One minibatch this buffer process drew: the rule and, per item, id, P2Value and pass rate."""

    seq: int = Field(description="Minibatches drawn by this process so far, this one included.")
    at: datetime
    n: int
    scheme: str
    alpha: float
    split: str | None = None
    population: int
    experience_ids: list[int]
    p2values: list[float]
    pass_rates: list[float | None]


class RecentDrawList(BaseModel):
    """``GET /v1/samples/recent``: the newest minibatches, oldest first."""

    items: list[RecentDraw]
