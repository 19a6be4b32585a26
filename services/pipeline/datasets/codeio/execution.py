"""Host side of one CodeIO record: build the sandbox script, run it, judge what came back.

:func:`build_script` turns a record into the text of :mod:`services.pipeline.datasets.codeio.box.script` plus one
call line carrying the record's code and the limits. :func:`evaluate` reads the sandbox's result
(``RunResult``-like: exit_code, stdout, stderr, timed_out, memory_exceeded, output_exceeded, wall_ms)
and decides: the call cases, or one skip reason. The two runs of the reference must agree under the
judge's own ``call`` comparison (``values_equal``), otherwise the task is ``nondeterministic``.
:func:`run_record` glues the two around ``services.judge.sandbox.run_in_sandbox``.

No FastAPI, no HTTP; the sandbox and comparison functions are passed in (the real ones by default).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from services.common.schemas.judge import CallCase

from .box.script import MARKER
from .records import CodeIORecord, input_key

SCRIPT_PATH = Path(__file__).parent / "box" / "script.py"

# Task-level skip reasons, in the order the summary lists them.
SKIP_REASONS = (
    "malformed_record",
    "syntax_error",
    "missing_package",
    "load_failed",
    "generator_failed",
    "inputs_not_dict",
    "inputs_not_json",
    "reference_failed",
    "output_not_json",
    "too_large",
    "timeout",
    "memory_exceeded",
    "output_too_large",
    "nondeterministic",
    "crashed",
    "too_few_tests",
)


class RunResultLike(Protocol):
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    memory_exceeded: bool
    output_exceeded: bool
    wall_ms: float


SandboxRun = Callable[..., RunResultLike]
Equal = Callable[[Any, Any], bool]


@dataclass(frozen=True)
class RunnerConfig:
    """Limits and sizes of one record's sandbox run."""

    tests: int = 10
    seed: int = 0
    max_attempts: int | None = None
    case_time_s: float = 1.0
    load_time_s: float = 20.0
    task_time_s: float = 60.0
    memory_mb: int = 512
    output_kb: int = 16384
    max_case_bytes: int = 100_000
    min_tests: int = 1
    rerun: bool = True
    repeats: int = 3

    def attempts(self) -> int:
        """Generator calls allowed to collect ``tests`` distinct inputs."""
        return self.max_attempts if self.max_attempts is not None else max(3 * self.tests, self.tests + 5)


@dataclass
class RecordOutcome:
    """What one record became: call cases, or a skip reason."""

    index: int
    cases: list[CallCase] = field(default_factory=list)
    skip_reason: str | None = None
    detail: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    wall_ms: float = 0.0
    reference_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.skip_reason is None


@cache
def _script_source() -> str:
    return SCRIPT_PATH.read_text(encoding="utf-8")


def record_code(record: CodeIORecord) -> str:
    """Reference and generator in one module, as reasoning-gym executes them."""
    return f"{record.code_sample}\n\n{record.input_generator}\n"


def build_script(record: CodeIORecord, config: RunnerConfig) -> str:
    """The full sandbox script for one record."""
    payload = {
        "code": record_code(record),
        "tests": config.tests,
        "seed": config.seed,
        "max_attempts": config.attempts(),
        "give_up_after": max(5, config.tests // 2),
        "case_time_s": config.case_time_s,
        "load_time_s": min(config.load_time_s, config.task_time_s / 3),
        "generate_budget_s": config.task_time_s * 0.45,
        "total_budget_s": config.task_time_s * 0.9,
        "max_case_bytes": config.max_case_bytes,
        "rerun": config.rerun,
        "repeats": config.repeats,
    }
    source = _script_source()
    return f"{source}\n_btp_codeio_main({json.dumps(payload)!r}, {source!r})\n"


def parse_stdout(stdout: str) -> dict[str, Any] | None:
    """The result object on the last marker line, or None."""
    for line in reversed(stdout.split("\n")):
        if line.startswith(MARKER):
            try:
                parsed = json.loads(line[len(MARKER) :])
            except json.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def _main_drop_reason(dropped: dict[str, int]) -> str:
    counts = Counter({k: v for k, v in dropped.items() if k not in ("duplicate_input", "budget_exhausted")})
    if not counts:
        return "too_few_tests"
    return counts.most_common(1)[0][0]


def evaluate(index: int, run: RunResultLike, config: RunnerConfig, equal: Equal) -> RecordOutcome:
    """Turn one sandbox run into call cases or a skip reason."""
    out = RecordOutcome(index=index, wall_ms=float(run.wall_ms or 0.0))
    result = parse_stdout(run.stdout or "")
    if result is None:
        if run.timed_out:
            out.skip_reason, out.detail = "timeout", f"sandbox time limit ({config.task_time_s}s)"
        elif run.memory_exceeded:
            out.skip_reason, out.detail = "memory_exceeded", f"sandbox memory limit ({config.memory_mb} MiB)"
        elif run.output_exceeded:
            out.skip_reason, out.detail = "output_too_large", f"sandbox output limit ({config.output_kb} KiB)"
        else:
            out.skip_reason = "crashed"
            out.detail = f"no result from the sandbox (exit {run.exit_code}): {(run.stderr or '')[-300:]}"
        return out
    out.dropped = dict(result.get("dropped") or {})
    out.attempts = int(result.get("attempts") or 0)
    status = result.get("status", "crashed")
    if status != "ok":
        out.skip_reason, out.detail = str(status), str(result.get("detail", ""))
        return out
    raw_cases: list[dict[str, Any]] = list(result.get("cases") or [])
    if not raw_cases:
        out.skip_reason = _main_drop_reason(out.dropped)
        out.detail = str((result.get("details") or {}).get(out.skip_reason, ""))
        return out

    expected = [json.loads(c["output"]) for c in raw_cases]
    keep = list(range(len(raw_cases)))
    if config.rerun:
        rerun = result.get("rerun") or {"status": "crashed", "detail": "no re-run result"}
        if rerun.get("status") != "ok":
            reason = str(rerun.get("status"))
            out.skip_reason = reason if reason in ("timeout", "memory_exceeded") else "crashed"
            out.detail = f"second run: {reason} {rerun.get('detail', '')}".strip()
            return out
        outputs = list(rerun.get("outputs") or [])
        if len(outputs) != len(raw_cases):
            out.skip_reason, out.detail = "crashed", "second run returned a different number of outputs"
            return out
        keep = []
        for i, second in enumerate(outputs):
            if second.get("error") == "timeout":
                out.dropped["timeout"] = out.dropped.get("timeout", 0) + 1  # near the limit: unstable
                continue
            if second.get("repeat_error") == "timeout":  # a slow repeat proves nothing either way
                second = {k: v for k, v in second.items() if k != "repeat_error"}
            texts = [second.get("output"), *second.get("variants", [])]
            differing = [t for t in texts if t is None or not equal(json.loads(t), expected[i])]
            if differing or "repeat_error" in second:
                out.skip_reason = "nondeterministic"
                got = (
                    (differing[0] if differing else None) or second.get("error") or second.get("repeat_error")
                )
                case = raw_cases[i]
                out.detail = f"input {case['input'][:200]}: {case['output'][:200]} vs {str(got)[:200]}"
                return out
            keep.append(i)

    seen: set[str] = set()
    for i in keep:
        key = input_key(raw_cases[i]["input"])
        if key in seen:  # the script already collapses duplicates; this guards the wire format
            continue
        seen.add(key)
        out.cases.append(CallCase(args=[], kwargs=json.loads(raw_cases[i]["input"]), expected=expected[i]))
        out.reference_ms.append(float(raw_cases[i].get("ms", 0.0)))
    if len(out.cases) < max(1, config.min_tests):
        out.skip_reason = "too_few_tests" if out.cases else _main_drop_reason(out.dropped)
        out.detail = f"{len(out.cases)} test(s), at least {config.min_tests} required"
        out.cases = []
    return out


def _infrastructure_failure(run: RunResultLike) -> bool:
    """No exit code, no output, no limit hit: the container died under us, not the record's fault."""
    return run.exit_code is None and not run.stdout and not (run.timed_out or run.memory_exceeded)


def run_record(
    record: CodeIORecord, config: RunnerConfig, *, sandbox: SandboxRun, equal: Equal
) -> RecordOutcome:
    """Run one record in the sandbox (one retry if the container itself died) and evaluate it."""
    script = build_script(record, config)
    limits = {"time_s": config.task_time_s, "memory_mb": config.memory_mb, "output_kb": config.output_kb}
    run = sandbox(script, stdin="", **limits)
    if _infrastructure_failure(run):
        run = sandbox(script, stdin="", **limits)
    return evaluate(record.index, run, config, equal)
