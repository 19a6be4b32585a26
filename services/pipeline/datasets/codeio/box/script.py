"""The script the CodeIO importer runs INSIDE the judge's sandbox, one run per record.

Never imported by the importer for execution: :mod:`services.pipeline.datasets.codeio.execution` reads this file's
source, appends one call line with the record's payload, and hands the text to
``services.judge.sandbox.run_in_sandbox``. Standard library only.

What one run does:

1. Loads the reference ``code_sample`` and the ``input_generator`` into one namespace (as reasoning-gym
   does), with stdout/stderr (Python and file descriptors) sent to /dev/null so prints in the record's
   code cannot corrupt the result.
2. Calls ``generate_inputs(random.Random(seed))`` repeatedly until it has ``tests`` distinct inputs (the
   key is canonical JSON), at most ``max_attempts`` calls. Each input goes through a JSON round trip and
   the reference is called as ``main_solution(**kwargs)`` on the decoded copy: exactly what the judge
   will do with the stored case. Every call runs under an interval-timer limit.
3. Re-runs the reference on every kept input in a child interpreter with a different ``PYTHONHASHSEED``
   and every input dict in the reverse key order (catches unseeded randomness, clocks, set-order
   dependence and dependence on the key order of input dicts, which the buffer's storage need not
   keep); the importer compares the two.
4. Writes one line ``MARKER + json`` to the saved real stdout.

Cases are dropped for a reason (generator or reference raised, timed out, input/output not plain JSON,
duplicate input, too large); a load failure (syntax error, missing package) ends the run early.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

MARKER = "@@BTP-CODEIO-RESULT@@ "
CHILD_HASH_SEEDS = ("8191", "131071")
REPEAT_UNDER_S = 0.2
MIN_SECOND_RUN_CALLS = 24  # a task with 2 distinct inputs gets 12 calls each (record 1888: Monty Hall)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _Timeout(BaseException):
    """Raised by the interval timer; a BaseException so the record's `except Exception` cannot eat it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _limited(seconds: float, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _classify(exc: BaseException, default: str) -> str:
    if isinstance(exc, _Timeout):
        return "timeout"
    if isinstance(exc, ImportError):
        return "missing_package"
    if isinstance(exc, MemoryError):
        return "memory_exceeded"
    return default


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Timeout):
        return "time limit"
    if isinstance(exc, ImportError) and getattr(exc, "name", None):
        return f"{type(exc).__name__}: {exc.name}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` survives a JSON round trip (up to tuple -> list and int dict keys -> str)."""
    if depth > 200:
        return False
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        # int keys become JSON strings; the judge compares dict keys as strings, so they still match.
        keys = [
            k if isinstance(k, str) else str(k)
            for k in value
            if isinstance(k, str | int) and not isinstance(k, bool)
        ]
        if len(keys) != len(value) or len(set(keys)) != len(keys):
            return False
        return all(_plain(v, depth + 1) for v in value.values())
    return False


def _shape(value: Any, depth: int = 0) -> str:
    """Short type sketch for skip details: ``dict[float -> int]``, ``list[ndarray]``."""
    if depth > 2:
        return "..."
    if isinstance(value, dict):
        if not value:
            return "dict"
        k, v = next(iter(value.items()))
        return f"dict[{type(k).__name__} -> {_shape(v, depth + 1)}]"
    if isinstance(value, list | tuple) and value:
        return f"{type(value).__name__}[{_shape(value[0], depth + 1)}]"
    return type(value).__name__


def _to_json(value: Any, *, canonical: bool = False) -> str | None:
    if not _plain(value):
        return None
    try:
        if canonical:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _quiet() -> int:
    """Send fds 1/2 (and sys.stdout/err, stdin) to /dev/null; return a dup of the real stdout."""
    for name in THREAD_ENV:
        os.environ[name] = "1"
    out_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    sys.stderr = sys.stdout
    sys.stdin = open(os.devnull)  # noqa: SIM115
    return out_fd


def _emit(out_fd: int, result: dict[str, Any]) -> None:
    data = (MARKER + json.dumps(result) + "\n").encode()
    while data:
        written = os.write(out_fd, data)
        data = data[written:]


def _load(code: str, seconds: float) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "codeio_reference", "Random": random.Random}
    compiled = compile(code, "<codeio>", "exec", dont_inherit=True)  # not our __future__ flags
    _limited(seconds, exec, compiled, namespace)
    return namespace


def _load_error(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return "syntax_error"
    return _classify(exc, "load_failed")


def _reversed_dicts(value: Any) -> Any:
    """The same value with every dict's key order reversed (lists keep their order)."""
    if isinstance(value, dict):
        return {k: _reversed_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_dicts(v) for v in value]
    return value


def _rerun(namespace: dict[str, Any], inputs: list[str], case_s: float, repeats: int) -> list[dict[str, Any]]:
    """Second run, in reverse input-dict key order (the stored JSON may come back from the buffer in
    another order: PostgreSQL's JSONB sorts keys). Fast cases are called ``repeats`` times (more when
    there are few cases: at least MIN_SECOND_RUN_CALLS calls in all), so low-entropy randomness (one of
    three messages, a won/lost game) rarely agrees by chance every time."""
    fn = namespace["main_solution"]
    results: list[dict[str, Any]] = []
    for key in inputs:
        texts: list[str | None] = []
        entry: dict[str, Any] = {}
        for _ in range(max(1, repeats, -(-MIN_SECOND_RUN_CALLS // max(1, len(inputs))))):
            tick = time.perf_counter()
            try:
                out = _limited(case_s, fn, **_reversed_dicts(json.loads(key)))
            except BaseException as exc:
                if texts:
                    entry["repeat_error"] = _classify(exc, "reference_failed")
                else:
                    entry = {"error": _classify(exc, "reference_failed"), "detail": _describe(exc)}
                break
            text = _to_json(out)
            if text not in texts:
                texts.append(text)
            if time.perf_counter() - tick > REPEAT_UNDER_S:
                break  # slow reference: one more call is all the time allows
        if "error" not in entry:
            if texts[0] is None:
                entry = {"error": "output_not_json"}
            else:
                entry.update(output=texts[0], variants=texts[1:])
        results.append(entry)
    return results


def _fresh_dir(tag: str) -> str:
    """A new empty working directory, so files written by the generator are not the reference's input."""
    try:
        return tempfile.mkdtemp(prefix=f"codeio-{tag}-")
    except OSError:
        return os.getcwd()


def _interpreter_flags() -> list[str]:
    """This interpreter's flags (-S, -s, -I, ...), so the child sees the same packages as the parent."""
    try:
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return []
    return flags


def _child_rerun(p: dict[str, Any], source: str, inputs: list[str], seconds: float) -> dict[str, Any]:
    seed = (
        CHILD_HASH_SEEDS[0]
        if os.environ.get("PYTHONHASHSEED") != CHILD_HASH_SEEDS[0]
        else CHILD_HASH_SEEDS[1]
    )
    env = dict(os.environ, PYTHONHASHSEED=seed)
    payload = json.dumps({"code": p["code"], "inputs": inputs, "case_time_s": p["case_time_s"],
                          "load_time_s": p["load_time_s"], "repeats": p["repeats"]})  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, *_interpreter_flags(), "-c", source + "\n_btp_codeio_child()\n"],
            input=payload, capture_output=True, text=True, timeout=max(seconds, 1.0), env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    except OSError as exc:
        return {"status": "spawn_failed", "detail": str(exc)[:300]}
    for line in reversed(proc.stdout.split("\n")):
        if line.startswith(MARKER):
            parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
            return parsed
    return {"status": "crashed", "detail": f"exit {proc.returncode}: {proc.stderr[-300:]}"}


def _btp_codeio_child() -> None:
    """Child mode: read {code, inputs} from stdin, re-run the reference, emit the outputs."""
    p = json.loads(sys.stdin.read())
    out_fd = _quiet()
    try:
        os.chdir(_fresh_dir("rerun"))
        namespace = _load(p["code"], p["load_time_s"])
        result = {"status": "ok", "outputs": _rerun(namespace, p["inputs"], p["case_time_s"], p["repeats"])}
    except BaseException as exc:
        result = {"status": _load_error(exc), "detail": _describe(exc)}
    _emit(out_fd, result)


def _btp_codeio_main(payload: str, source: str) -> None:
    """Parent mode: load, generate, run the reference, re-run it in a child, emit everything."""
    started = time.monotonic()
    p = json.loads(payload)
    out_fd = _quiet()
    result: dict[str, Any] = {"status": "ok", "cases": [], "dropped": {}, "attempts": 0}

    def drop(reason: str, exc: BaseException | str | None = None) -> None:
        result["dropped"][reason] = result["dropped"].get(reason, 0) + 1
        if exc is not None:
            text = exc if isinstance(exc, str) else _describe(exc)
            result.setdefault("details", {}).setdefault(reason, text)

    gen_dir, ref_dir = _fresh_dir("gen"), _fresh_dir("ref")
    try:
        os.chdir(ref_dir)
        namespace = _load(p["code"], p["load_time_s"])
    except BaseException as exc:
        result.update(status=_load_error(exc), detail=_describe(exc))
        _emit(out_fd, result)
        return
    generate, main_solution = namespace.get("generate_inputs"), namespace.get("main_solution")
    if not callable(generate) or not callable(main_solution):
        result.update(status="load_failed", detail="generate_inputs or main_solution is not defined")
        _emit(out_fd, result)
        return

    rng = random.Random(p["seed"])
    seen: set[str] = set()
    cases: list[dict[str, Any]] = result["cases"]
    case_s = p["case_time_s"]
    while len(cases) < p["tests"] and result["attempts"] < p["max_attempts"]:
        if time.monotonic() - started > p["generate_budget_s"]:
            drop("budget_exhausted")
            break
        if not cases and result["attempts"] >= p["give_up_after"]:
            break  # nothing has worked so far: no point burning the remaining attempts
        result["attempts"] += 1
        os.chdir(gen_dir)
        try:
            inputs = _limited(case_s, generate, rng)
        except BaseException as exc:
            drop(_classify(exc, "generator_failed"), exc)
            continue
        if not isinstance(inputs, dict):
            drop("inputs_not_dict", f"generate_inputs returned {type(inputs).__name__}")
            continue
        key = _to_json(inputs, canonical=True)
        if key is None:
            drop("inputs_not_json", f"inputs are not plain JSON: {_shape(inputs)}")
            continue
        if key in seen:
            drop("duplicate_input")
            continue
        seen.add(key)
        os.chdir(ref_dir)
        tick = time.perf_counter()
        try:
            out = _limited(case_s, main_solution, **json.loads(key))
        except BaseException as exc:
            drop(_classify(exc, "reference_failed"), exc)
            continue
        elapsed_ms = (time.perf_counter() - tick) * 1000.0
        text = _to_json(out)
        if text is None:
            drop("output_not_json", f"output is not plain JSON: {_shape(out)}")
            continue
        if len(key) + len(text) > p["max_case_bytes"]:
            drop("too_large", f"{len(key) + len(text)} bytes of JSON > {p['max_case_bytes']}")
            continue
        cases.append({"input": key, "output": text, "ms": round(elapsed_ms, 3)})

    if cases and p["rerun"]:
        left = p["total_budget_s"] - (time.monotonic() - started)
        rerun = _child_rerun(p, source, [c["input"] for c in cases], left)
        if rerun.get("status") == "spawn_failed":
            # No second process allowed: re-run in this process (hash seed then goes unchecked).
            rerun = {
                "status": "ok",
                "mode": "in_process",
                "outputs": _rerun(namespace, [c["input"] for c in cases], case_s, p["repeats"]),
            }
        result["rerun"] = rerun
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    _emit(out_fd, result)
