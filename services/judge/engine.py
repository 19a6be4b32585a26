"""The judge's domain core (no FastAPI): limits, jobs for the sandbox, verdicts, back-pressure.

Per-case statuses: ``passed``, ``wrong_answer``, ``runtime_error``, ``timeout``, ``memory_exceeded``,
``output_exceeded``, ``syntax_error``. ``pass_rate = passed / total`` (Eq. 4 as a fraction); the verdict is
``passed`` only when every case passed.

Where each verdict is decided: ``stdio`` outputs and ``call`` return values travel back from the sandbox
and are compared here, in the service, with :mod:`.compare` (the program never sees the expected values,
so it cannot fake them except by computing them). ``check`` asserts run inside the sandbox in a checker
process separate from the program's (``checker=process``, the default; see checker.py), which gets only
plain return values from it; with ``checker=inprocess`` they run next to the candidate (faster, hardened,
but open to deliberate frame introspection). Results never come from the program's output: the harness
reads them from a channel the program does not hold (a socket, or a pipe whose lines carry a per-run
secret).

Back-pressure: at most ``max_queue`` programs are admitted at once (running in one of the ``workers``
containers or waiting for one); a request that would exceed it gets 429 and nothing of it runs.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from services.common.errors import OverloadedError, UnavailableError, ValidationError
from services.common.schemas.judge import (
    CallTests,
    CaseResult,
    CheckTests,
    JudgeRequest,
    JudgeResponse,
    Limits,
    StdioTests,
)

from .checks import plan_check
from .compare import stdio_equal, values_equal
from .sandbox import SandboxPool
from .settings import Settings

DETAIL_MAX = 500


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
    return out


def _syntax_error(program: str) -> str | None:
    try:
        compile(program, "<program>", "exec", dont_inherit=True)
    except SyntaxError as e:
        return f"{type(e).__name__}: {e}"[:DETAIL_MAX]
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:
        return f"{type(e).__name__}: {e}"[:DETAIL_MAX]
    return None


def decode_value(v: Any) -> Any:
    """Undo the harness's JSON escapes for non-finite floats."""
    if isinstance(v, dict):
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: decode_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    return v


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 120 else text[:117] + "..."


def build_job(req: JudgeRequest, limits: dict[str, Any], checker: str = "process") -> dict[str, Any]:
    """The harness request for one program."""
    tests = req.tests
    job: dict[str, Any] = {"kind": tests.kind, "program": req.program, "limits": dict(limits), "checker": checker}
    if isinstance(tests, StdioTests):
        job["cases"] = [c.input for c in tests.cases]
        n = 1
    elif isinstance(tests, CallTests):
        job["fn_name"] = tests.fn_name
        job["cases"] = [{"args": c.args, "kwargs": c.kwargs} for c in tests.cases]
        n = len(tests.cases) + 1
    else:
        plan = plan_check(tests.code)
        job["entry_point"] = tests.entry_point
        job["check_prelude"] = plan.prelude
        job["program_names"] = plan.program_names
        job["cases"] = plan.cases
        n = len(plan.cases) + 1
    job["limits"]["cpu_total_s"] = math.ceil(limits["cpu_s"] * n + 1)
    return job


def _stdio_case(i: int, c: dict[str, Any], expected: str) -> CaseResult:
    t = float(c.get("t", 0.0))
    if c.get("timed_out"):
        return CaseResult(index=i, status="timeout", time_ms=t, detail="time limit exceeded")
    if c.get("memory_exceeded"):
        return CaseResult(index=i, status="memory_exceeded", time_ms=t, detail="memory limit exceeded")
    if c.get("output_exceeded"):
        return CaseResult(index=i, status="output_exceeded", time_ms=t, detail="output limit exceeded")
    if c.get("exit_code") != 0:
        tail = (c.get("stderr") or "").strip().splitlines()[-3:]
        detail = f"exit code {c.get('exit_code')}: " + " | ".join(tail)
        return CaseResult(index=i, status="runtime_error", time_ms=t, detail=detail[:DETAIL_MAX])
    if stdio_equal(c.get("stdout", ""), expected):
        return CaseResult(index=i, status="passed", time_ms=t)
    got = (c.get("stdout") or "")[:100]
    return CaseResult(index=i, status="wrong_answer", time_ms=t, detail=f"output differs: got {got!r}"[:DETAIL_MAX])


def to_response(req: JudgeRequest, reply: dict[str, Any], n_cases: int) -> JudgeResponse:
    """Verdicts from the harness's reply (comparisons for stdio and call happen here)."""
    tests = req.tests
    cases: list[CaseResult] = []
    if "box_died" in reply or "error" in reply:
        why = reply.get("box_died") or reply.get("error")
        cases = [
            CaseResult(index=i, status="runtime_error", time_ms=0.0, detail=f"sandbox terminated: {why}"[:DETAIL_MAX])
            for i in range(n_cases)
        ]
    else:
        raw = reply["cases"]
        for i in range(n_cases):
            c = raw[i] if i < len(raw) and raw[i] is not None else {"status": "runtime_error", "detail": "no result"}
            if isinstance(tests, StdioTests):
                cases.append(_stdio_case(i, c, tests.cases[i].output))
                continue
            t = float(c.get("t", 0.0))
            status = c.get("status", "runtime_error")
            detail = str(c.get("detail", ""))[:DETAIL_MAX]
            if status == "value" and isinstance(tests, CallTests):
                value = decode_value(c.get("value"))
                expected = tests.cases[i].expected
                if values_equal(value, expected):
                    cases.append(CaseResult(index=i, status="passed", time_ms=t))
                else:
                    detail = f"expected {_short(expected)}, got {_short(value)}"
                    cases.append(CaseResult(index=i, status="wrong_answer", time_ms=t, detail=detail))
                continue
            if status == "value" or (status == "passed" and isinstance(tests, CallTests)):
                # a call case passes only by the comparison above; anything else is not a verdict
                status, detail = "runtime_error", detail or "no value returned"
            cases.append(CaseResult(index=i, status=status, time_ms=t, detail=detail))
    passed = sum(1 for c in cases if c.status == "passed")
    total = len(cases)
    return JudgeResponse(
        pass_rate=passed / total if total else 0.0,
        passed=passed,
        total=total,
        verdict="passed" if total and passed == total else "failed",
        cases=cases,
    )


class Judge:
    """Judges programs on a :class:`SandboxPool`; thread-safe."""

    def __init__(self, settings: Settings, pool: SandboxPool) -> None:
        self.settings = settings
        self.pool = pool
        self._executor = ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="btp-judge")
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

    def prepare(self, req: JudgeRequest) -> tuple[dict[str, Any] | None, JudgeResponse | None, int]:
        """Validate one request: (job, immediate response for a syntax error, number of cases)."""
        limits = resolve_limits(self.settings, req.limits)
        job = build_job(req, limits, self.settings.checker)
        n = len(job["cases"])
        err = _syntax_error(req.program)
        if err is not None:
            cases = [CaseResult(index=i, status="syntax_error", time_ms=0.0, detail=err) for i in range(n)]
            return None, JudgeResponse(pass_rate=0.0, passed=0, total=n, verdict="failed", cases=cases), n
        return job, None, n

    def _run(self, req: JudgeRequest, job: dict[str, Any], n: int) -> JudgeResponse:
        lim = job["limits"]
        timeout = (n + 2) * (lim["time_s"] + 1.0) + 30.0
        reply = self.pool.run(job, timeout)
        if "box_died" in reply and not self.pool.healthy():
            raise UnavailableError("sandbox containers cannot be restarted: " + str(reply["box_died"]))
        return to_response(req, reply, n)

    def judge_many(self, items: list[JudgeRequest]) -> list[JudgeResponse]:
        """Judge several programs in parallel across the warm containers; results in order."""
        prepared = [self.prepare(r) for r in items]  # validate everything before running anything
        self._admit(len(items))
        try:
            futures: list[Future[JudgeResponse] | None] = []
            for req, (job, immediate, n) in zip(items, prepared, strict=True):
                if immediate is not None:
                    futures.append(None)
                else:
                    assert job is not None
                    futures.append(self._executor.submit(self._run, req, job, n))
            out: list[JudgeResponse] = []
            for fut, (_, immediate, _) in zip(futures, prepared, strict=True):
                if fut is None:
                    assert immediate is not None
                    out.append(immediate)
                else:
                    out.append(fut.result())
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


__all__ = ["CheckTests", "Judge", "build_job", "resolve_limits", "to_response"]
