"""The judge's domain core (no FastAPI): limits, jobs for the sandbox, verdicts, back-pressure.

Per-case statuses: ``passed``, ``wrong_answer``, ``runtime_error``, ``timeout``, ``memory_exceeded``,
``output_exceeded``, ``syntax_error``. ``pass_rate = passed / total`` (Eq. 4 as a fraction); the verdict is
``passed`` only when every case passed.

Where each verdict is decided (docs/judge.md has the whole isolation model): ``stdio`` outputs and
``call`` return values travel back from the sandbox and are compared here with :mod:`.compare` (the
expected values never enter the sandbox). ``check`` asserts run inside the sandbox in a checker process
that is not the program's (box/checker.py). Nothing a program produces is trusted here: the reply of a
container is read field by field (:func:`to_response`), a malformed field decides its own case as a
``runtime_error``, and one bad item never fails the others of a batch. Nothing derived from a program is
parsed or compiled in this process beyond bounded JSON: syntax errors are found in the sandbox. Sizes are
capped: the program (``max_program_kb``, 413), the tests (``max_test_kb``, 413), what a program sends
back (``output_kb`` per case, ``reply_kb`` per program: ``output_exceeded``).

Back-pressure: at most ``max_queue`` programs are admitted at once (running in one of the ``workers``
containers or waiting for one); a request that would exceed it gets 429 and nothing of it runs.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from services.common.errors import OverloadedError, PayloadTooLargeError, UnavailableError, ValidationError
from services.common.schemas.judge import (
    CallTests,
    CaseResult,
    CheckTests,
    JudgeRequest,
    JudgeResponse,
    Limits,
    StdioTests,
)

from .checks import CheckPlan, plan_check
from .compare import stdio_equal, values_equal
from .sandbox import SandboxPool
from .settings import Settings

DETAIL_MAX = 500
log = logging.getLogger(__name__)


def resolve_limits(settings: Settings, limits: Limits | None) -> dict[str, Any]:
    """Request limits over the defaults; anything above the configured maxima is a 422."""
    lim = limits or Limits()
    out: dict[str, Any] = {
        "time_s": settings.time_s,
        "cpu_s": settings.cpu_s or settings.time_s,
        "memory_mb": settings.memory_mb,
        "output_kb": settings.output_kb,
        "processes": settings.processes,
    }
    maxima = {
        "time_s": settings.max_time_s,
        "cpu_s": settings.max_cpu_s,
        "memory_mb": settings.max_memory_mb,
        "output_kb": settings.max_output_kb,
        "processes": settings.max_processes,
    }
    for name, cap in maxima.items():
        value = getattr(lim, name)
        if value is None:
            continue
        if value > cap:
            raise ValidationError(f"limits.{name} = {value} is above this judge's maximum {cap}", param=f"limits.{name}")
        out[name] = value
    if lim.cpu_s is None and lim.time_s is not None:
        out["cpu_s"] = min(out["time_s"], settings.max_cpu_s)
    if lim.program_time_s is not None:
        if lim.program_time_s > settings.max_program_time_s:
            raise ValidationError(
                f"limits.program_time_s = {lim.program_time_s} is above this judge's maximum "
                f"{settings.max_program_time_s}",
                param="limits.program_time_s",
            )
        out["budget_s"] = max(lim.program_time_s, out["time_s"])
    elif settings.program_time_s is not None:
        out["budget_s"] = max(settings.program_time_s, out["time_s"])
    else:
        out["budget_s"] = max(2 * out["time_s"], 5.0)
    out["reply_kb"] = settings.reply_kb
    return out


class MalformedValue(ValueError):
    """A value from the sandbox that is not a well-formed tagged value."""


_FLOAT_TAGS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def decode_value(v: Any, depth: int = 0) -> Any:
    """The value a runner's tagged JSON stands for (the inverse of box/program.py's ``encode``).

    Strict: every JSON object must be exactly one known tag with a payload of the right shape; anything
    else raises :class:`MalformedValue`, so no returned value can decode into another type.
    """
    if depth > 200:
        raise MalformedValue("value nested too deeply")
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, list):
        return [decode_value(x, depth + 1) for x in v]
    if not isinstance(v, dict) or len(v) != 1:
        raise MalformedValue("not a tagged value")
    ((tag, payload),) = v.items()
    if tag == "x" and isinstance(payload, str) and len(payload) < 10_000_000:
        try:
            return int(payload, 16)  # a huge int, in hex (linear to parse)
        except ValueError:
            raise MalformedValue("bad int") from None
    if tag == "f" and isinstance(payload, str) and payload in _FLOAT_TAGS:
        return _FLOAT_TAGS[payload]
    if tag == "b" and isinstance(payload, str):
        try:
            return payload.encode("latin-1")
        except UnicodeEncodeError:
            raise MalformedValue("bytes out of range") from None
    if tag == "c" and isinstance(payload, list) and len(payload) == 2:
        re_, im = (decode_value(x, depth + 1) for x in payload)
        if all(type(x) in (int, float) for x in (re_, im)):
            return complex(re_, im)
        raise MalformedValue("bad complex")
    if not isinstance(payload, list):
        raise MalformedValue("bad container")
    try:
        if tag == "t":
            return tuple(decode_value(x, depth + 1) for x in payload)
        if tag == "s":
            return {decode_value(x, depth + 1) for x in payload}
        if tag == "fs":
            return frozenset(decode_value(x, depth + 1) for x in payload)
        if tag == "d":
            out = {}
            for pair in payload:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise MalformedValue("bad dict item")
                out[decode_value(pair[0], depth + 1)] = decode_value(pair[1], depth + 1)
            return out
    except TypeError as e:  # an unhashable key or set item
        raise MalformedValue(str(e)) from None
    raise MalformedValue(f"unknown tag {tag[:20]!r}")


def _short(x: Any) -> str:
    try:
        text = repr(x)
    except ValueError:  # an int too long for decimal text
        text = f"<int of {x.bit_length()} bits>" if isinstance(x, int) else "<unprintable value>"
    return text if len(text) <= 120 else text[:117] + "..."


@lru_cache(maxsize=512)
def _plan(code: str) -> CheckPlan:
    # the same tests are judged for every program of a task: split each check source once
    return plan_check(code)


def _size_caps(settings: Settings, req: JudgeRequest, where: str) -> None:
    """413 for a program or tests above the configured sizes (before anything is parsed or run)."""
    prog = len(req.program.encode("utf-8", "surrogatepass"))
    if prog > settings.max_program_kb * 1024:
        raise PayloadTooLargeError(
            f"program is {prog} bytes, above this judge's limit of {settings.max_program_kb} KiB",
            param=f"{where}program",
        )
    tests = req.tests
    if isinstance(tests, CheckTests):
        size = len(tests.code)
    elif isinstance(tests, StdioTests):
        size = sum(len(c.input) + len(c.output) for c in tests.cases)
    else:
        size = len(json.dumps([[c.args, c.kwargs, c.expected] for c in tests.cases], default=str))
    if size > settings.max_test_kb * 1024:
        raise PayloadTooLargeError(
            f"tests are {size} bytes, above this judge's limit of {settings.max_test_kb} KiB",
            param=f"{where}tests",
        )


def build_job(req: JudgeRequest, limits: dict[str, Any]) -> dict[str, Any]:
    """The harness request for one program."""
    tests = req.tests
    job: dict[str, Any] = {"kind": tests.kind, "program": req.program, "limits": dict(limits)}
    if isinstance(tests, StdioTests):
        job["cases"] = [c.input for c in tests.cases]
        n = 1
    elif isinstance(tests, CallTests):
        job["fn_name"] = tests.fn_name
        job["cases"] = [{"args": c.args, "kwargs": c.kwargs} for c in tests.cases]
        n = len(tests.cases) + 1
    else:
        plan = _plan(tests.code)
        job["entry_point"] = tests.entry_point
        job["check_prelude"] = plan.prelude
        job["program_names"] = plan.program_names
        job["cases"] = plan.cases
        n = len(plan.cases) + 1
    job["limits"]["cpu_total_s"] = math.ceil(limits["cpu_s"] * n + 1)
    return job


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else 0.0


def _text(x: Any) -> str:
    """A string from the sandbox, safe to serialise (a lone surrogate becomes '?')."""
    return x.encode("utf-8", "replace").decode("utf-8") if isinstance(x, str) else ""


def _stdio_case(i: int, c: dict[str, Any], expected: str, rule: str, time_s: float) -> CaseResult:
    t = _num(c.get("t"))
    if c.get("budget"):
        return CaseResult(index=i, status="timeout", time_ms=t, detail="not run: the program's time budget was spent")
    if c.get("timed_out") is True or t > time_s * 1000.0:
        return CaseResult(index=i, status="timeout", time_ms=t, detail="time limit exceeded")
    if isinstance(c.get("syntax_error"), str):
        return CaseResult(index=i, status="syntax_error", time_ms=t, detail=c["syntax_error"][:DETAIL_MAX])
    if c.get("memory_exceeded") is True:
        return CaseResult(index=i, status="memory_exceeded", time_ms=t, detail="memory limit exceeded")
    if c.get("output_exceeded") is True:
        return CaseResult(index=i, status="output_exceeded", time_ms=t, detail="output limit exceeded")
    if c.get("exit_code") != 0:
        tail = _text(c.get("stderr")).strip().splitlines()[-3:]
        detail = f"exit code {c.get('exit_code')}: " + " | ".join(tail)
        return CaseResult(index=i, status="runtime_error", time_ms=t, detail=detail[:DETAIL_MAX])
    out = _text(c.get("stdout"))
    if stdio_equal(out, expected, rule):
        return CaseResult(index=i, status="passed", time_ms=t)
    return CaseResult(index=i, status="wrong_answer", time_ms=t, detail=f"output differs: got {out[:100]!r}"[:DETAIL_MAX])


_STATUSES = {"passed", "wrong_answer", "runtime_error", "timeout", "memory_exceeded", "output_exceeded", "syntax_error"}


def _case(req: JudgeRequest, i: int, c: Any, time_s: float) -> CaseResult:
    """One case of a container's reply, read field by field."""
    tests = req.tests
    if not isinstance(c, dict):
        return CaseResult(index=i, status="runtime_error", time_ms=0.0, detail="no result")
    if isinstance(tests, StdioTests):
        return _stdio_case(i, c, tests.cases[i].output, tests.compare, time_s)
    t = _num(c.get("t"))
    status = c.get("status")
    detail = _text(c.get("detail"))[:DETAIL_MAX]
    if status in ("value", "passed") and t > time_s * 1000.0:
        return CaseResult(index=i, status="timeout", time_ms=t, detail="time limit exceeded")
    if isinstance(tests, CallTests):
        if status != "value":
            # a call case passes only by the comparison below
            if status not in _STATUSES or status == "passed":
                status, detail = "runtime_error", detail or "no value returned"
            return CaseResult(index=i, status=status, time_ms=t, detail=detail)
        try:
            value = decode_value(c.get("value"))
        except (MalformedValue, RecursionError, OverflowError) as e:
            return CaseResult(index=i, status="runtime_error", time_ms=t, detail=f"malformed value: {e}"[:DETAIL_MAX])
        expected = tests.cases[i].expected
        if values_equal(value, expected, tests.compare):
            return CaseResult(index=i, status="passed", time_ms=t)
        return CaseResult(
            index=i, status="wrong_answer", time_ms=t, detail=f"expected {_short(expected)}, got {_short(value)}"
        )
    if status not in _STATUSES:
        status, detail = "runtime_error", "malformed result"
    return CaseResult(index=i, status=status, time_ms=t, detail=detail)


def _verdict(cases: list[CaseResult]) -> JudgeResponse:
    passed = sum(1 for c in cases if c.status == "passed")
    total = len(cases)
    return JudgeResponse(
        pass_rate=passed / total if total else 0.0,
        passed=passed,
        total=total,
        verdict="passed" if total and passed == total else "failed",
        cases=cases,
    )


def _all(n: int, status: Any, detail: str) -> JudgeResponse:
    return _verdict([CaseResult(index=i, status=status, time_ms=0.0, detail=detail[:DETAIL_MAX]) for i in range(n)])


def to_response(req: JudgeRequest, reply: dict[str, Any], n_cases: int, time_s: float = math.inf) -> JudgeResponse:
    """Verdicts from a container's reply (comparisons for stdio and call happen here); never raises."""
    if "box_died" in reply or "error" in reply:
        why = reply.get("box_died") or reply.get("error")
        return _all(n_cases, "runtime_error", f"sandbox terminated: {_text(str(why))}")
    raw = reply.get("cases")
    if not isinstance(raw, list):
        return _all(n_cases, "runtime_error", "malformed reply from the sandbox")
    cases = []
    for i in range(n_cases):
        try:
            cases.append(_case(req, i, raw[i] if i < len(raw) else None, time_s))
        except Exception as e:  # whatever a program sent, the answer is a verdict for its case
            log.warning("case %d: unreadable result (%s: %s)", i, type(e).__name__, e)
            cases.append(CaseResult(index=i, status="runtime_error", time_ms=0.0, detail="unreadable result"))
    return _verdict(cases)


class Judge:
    """Judges programs on a :class:`SandboxPool`; thread-safe."""

    def __init__(
        self, settings: Settings, pool: SandboxPool, environments: dict[str, SandboxPool] | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.environments = environments or {}
        workers = pool.size + sum(p.size for p in self.environments.values())
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="btp-judge")
        self._lock = threading.Lock()
        self._admitted = 0
        self.programs_judged = 0

    def _admit(self, k: int) -> None:
        with self._lock:
            if self._admitted + k > self.settings.max_queue:
                raise OverloadedError(
                    f"judge queue full ({self._admitted} programs admitted, limit {self.settings.max_queue}); retry later"
                )
            self._admitted += k

    def _release(self, k: int) -> None:
        with self._lock:
            self._admitted -= k

    @property
    def queued(self) -> int:
        """Programs admitted and not finished."""
        return self._admitted

    def prepare(self, req: JudgeRequest, where: str = "") -> tuple[dict[str, Any], int]:
        """Validate one request (sizes, limits, the check's split): (job, number of cases)."""
        _size_caps(self.settings, req, where)
        limits = resolve_limits(self.settings, req.limits)
        job = build_job(req, limits)
        env = req.environment or req.tests.environment
        if env is not None:
            if env not in self.environments:
                known = ", ".join(sorted(self.environments)) or "none configured (BTP_JUDGE_ENVIRONMENTS)"
                raise ValidationError(
                    f"unknown environment {env!r}; this judge has: {known}", param=f"{where}environment"
                )
            job["environment"] = env
        return job, len(job["cases"])

    def _run(self, req: JudgeRequest, job: dict[str, Any], n: int) -> JudgeResponse:
        lim = job["limits"]
        timeout = lim["budget_s"] + 2 * (lim["time_s"] + 1.0) + 30.0
        pool = self.environments[job["environment"]] if job.get("environment") else self.pool
        reply = pool.run(job, timeout)
        if "box_died" in reply and not pool.healthy():
            raise UnavailableError("sandbox containers cannot be restarted: " + str(reply["box_died"]))
        return to_response(req, reply, n, lim["time_s"])

    def judge_many(self, items: list[JudgeRequest]) -> list[JudgeResponse]:
        """Judge several programs in parallel across the warm containers; results in order."""
        where = (lambda i: f"items[{i}].") if len(items) > 1 else (lambda i: "")
        prepared = [self.prepare(r, where(i)) for i, r in enumerate(items)]  # validate everything first
        self._admit(len(items))
        try:
            futures = [
                self._executor.submit(self._run, req, job, n)
                for req, (job, n) in zip(items, prepared, strict=True)
            ]
            out = [fut.result() for fut in futures]
            with self._lock:
                self.programs_judged += len(items)
            return out
        finally:
            self._release(len(items))

    def judge(self, req: JudgeRequest) -> JudgeResponse:
        """Judge one program."""
        return self.judge_many([req])[0]

    def close(self) -> None:
        """Stop the worker threads and the containers."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
        for pool in self.environments.values():
            pool.close()


__all__ = ["CheckTests", "Judge", "build_job", "resolve_limits", "to_response"]
