"""Judge wire models: ``POST /v1/judge``, ``POST /v1/judge/batch`` and the TestSpec union."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .types import Count, Real

CompareRule = Literal["default", "apps", "codecontests", "exact"]
_COMPARE_DOC = (
    "Comparison rule (docs/judge.md): `default` (the judge's own), `apps` (APPS testing_util.py), "
    "`codecontests` (deepmind/code_contests OutputsMatch), `exact`."
)
CaseStatus = Literal[
    "passed",
    "wrong_answer",
    "runtime_error",
    "timeout",
    "memory_exceeded",
    "output_exceeded",
    "syntax_error",
]
Verdict = Literal["passed", "failed"]


class StdioCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = Field(max_length=16_000_000)
    output: str = Field(max_length=16_000_000)


class StdioTests(BaseModel):
    """Standard-input tasks (APPS, CodeContests): the program reads stdin and writes stdout."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stdio"] = "stdio"
    cases: list[StdioCase] = Field(min_length=1, max_length=10_000)
    compare: CompareRule = Field("default", description=_COMPARE_DOC)
    environment: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Named interpreter environment (BTP_JUDGE_ENVIRONMENTS) the program runs in; default: the "
        "sandbox's bare interpreter (standard library only).",
    )


class CallCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    expected: Any = None


class CallTests(BaseModel):
    """Call-based tasks (APPS with fn_name, CodeIO): ``fn_name(*args, **kwargs) == expected``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["call"] = "call"
    fn_name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    cases: list[CallCase] = Field(min_length=1, max_length=10_000)
    compare: CompareRule = Field("default", description=_COMPARE_DOC)
    environment: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Named interpreter environment (BTP_JUDGE_ENVIRONMENTS) the program runs in; default: the "
        "sandbox's bare interpreter (standard library only).",
    )


class CheckTests(BaseModel):
    """HumanEval/MBPP style: ``check(candidate)``; each top-level assert involving candidate is a case."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["check"] = "check"
    entry_point: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    code: str = Field(min_length=1, max_length=64_000_000)
    environment: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Named interpreter environment (BTP_JUDGE_ENVIRONMENTS) the program runs in; default: the "
        "sandbox's bare interpreter (standard library only).",
    )


TestSpec = Annotated[StdioTests | CallTests | CheckTests, Field(discriminator="kind")]


class Limits(BaseModel):
    """Per-case limits; unset fields take the service defaults; values above the maxima are a 4xx."""

    model_config = ConfigDict(extra="forbid")
    time_s: Real | None = Field(None, gt=0, le=600, description="Wall time per case, seconds.")
    cpu_s: Real | None = Field(None, gt=0, le=600, description="CPU time per case, seconds.")
    memory_mb: Count | None = Field(None, ge=16, le=65536, description="Address-space limit, MiB.")
    output_kb: Count | None = Field(None, ge=1, le=1_048_576, description="Output size limit, KiB.")
    processes: Count | None = Field(None, ge=1, le=4096, description="Processes/threads at most.")
    program_time_s: Real | None = Field(
        None, gt=0, le=3600,
        description="Wall-time budget of the whole program, all cases together; cases not started when it "
        "runs out are timeouts.",
    )


class JudgeRequest(BaseModel):
    """Run one program against its tests."""

    model_config = ConfigDict(extra="forbid")
    program: str = Field(
        max_length=64_000_000, description="The program; above the judge's `max_program_kb` (default 1 MiB) is a 413."
    )
    tests: TestSpec
    limits: Limits | None = None
    environment: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Named interpreter environment (BTP_JUDGE_ENVIRONMENTS) the program runs in; default: the "
        "sandbox's bare interpreter (standard library only).",
    )


class CaseResult(BaseModel):
    index: int = Field(ge=0)
    status: CaseStatus
    time_ms: float = Field(ge=0)
    detail: str = ""


class JudgeResponse(BaseModel):
    """pass_rate = passed / total (Eq. 4 as a fraction)."""

    pass_rate: float = Field(ge=0.0, le=1.0)
    passed: int = Field(ge=0)
    total: int = Field(ge=0)
    verdict: Verdict
    cases: list[CaseResult]


class JudgeBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[JudgeRequest] = Field(min_length=1, max_length=4096)


class JudgeBatchResponse(BaseModel):
    results: list[JudgeResponse]
