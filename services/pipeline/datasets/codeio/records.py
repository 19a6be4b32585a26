"""CodeIO records: reading the data file, and the pure per-record rules of the importer.

CodeIO (Apache-2.0) ships in the ``reasoning-gym`` wheel at ``reasoning_gym/data/codeio.jsonl.gz``:
3,002 JSON lines, each with ``task_description``, ``input_output_spec``, a reference ``code_sample``
that defines ``main_solution(...)``, an ``input_generator`` defining ``generate_inputs(rng)`` and, for
2,508 of them, a ``difficulty`` from 1 to 10 (plus quality scores). reasoning-gym itself calls the
reference as ``main_solution(**generate_inputs(rng))``, so a test case is a kwargs dict.

Everything here is plain Python with no sandbox, HTTP or FastAPI: loading (from the wheel, read with
:mod:`zipfile` without installing the package, or from a ``.jsonl``/``.jsonl.gz``/``.json`` file), the
prompt, the difficulty buckets, the train/test split and the deduplication key of an input.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHEEL_NAME = "reasoning-gym"
WHEEL_VERSION = "0.1.25"
WHEEL_MEMBER = "reasoning_gym/data/codeio.jsonl.gz"
REQUIRED_FIELDS = ("task_description", "input_output_spec", "code_sample", "input_generator")

# CodeIO's difficulty (1-10) in the data: 2:3, 3:3, 4:2, 5:6, 6:22, 7:393, 8:2025, 9:54, absent:494.
# The buckets use APPS's names so one `difficulty` filter works across data sets.
DIFFICULTY_BUCKETS: tuple[tuple[int, int, str], ...] = (
    (1, 7, "introductory"),
    (8, 8, "interview"),
    (9, 10, "competition"),
)


class CodeIODataError(Exception):
    """The data file cannot be found, fetched or read."""


@dataclass(frozen=True)
class CodeIORecord:
    """One CodeIO line, with its position in the file."""

    index: int
    task_description: str
    input_output_spec: str
    code_sample: str
    input_generator: str
    difficulty: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source_hash(self) -> str:
        """sha256 of the reference and generator: identifies the record across files and versions."""
        h = hashlib.sha256()
        h.update(self.code_sample.encode())
        h.update(b"\0")
        h.update(self.input_generator.encode())
        return h.hexdigest()


class MalformedRecord(ValueError):
    """A line that is not a usable CodeIO record (a skip reason, not a crash)."""


def parse_record(index: int, raw: Any) -> CodeIORecord:
    """Validate one decoded JSON line; raise :class:`MalformedRecord` when it is unusable."""
    if not isinstance(raw, dict):
        raise MalformedRecord(f"record {index} is {type(raw).__name__}, not an object")
    for name in REQUIRED_FIELDS:
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            raise MalformedRecord(f"record {index}: field {name!r} missing or not a non-empty string")
    difficulty = raw.get("difficulty")
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | None):
        raise MalformedRecord(f"record {index}: difficulty {difficulty!r} is not an integer")
    extra = {k: v for k, v in raw.items() if k not in (*REQUIRED_FIELDS, "difficulty")}
    return CodeIORecord(
        index=index,
        task_description=raw["task_description"].strip(),
        input_output_spec=raw["input_output_spec"].strip(),
        code_sample=raw["code_sample"],
        input_generator=raw["input_generator"],
        difficulty=difficulty,
        extra=extra,
    )


# --- reading the data ------------------------------------------------------------------------------


def _lines_from_bytes(data: bytes, name: str) -> list[str]:
    if name.endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    if name.endswith(".json") and text.lstrip().startswith("["):
        return [json.dumps(item) for item in json.loads(text)]
    return text.splitlines()


def read_raw_lines(path: Path) -> list[str]:
    """The JSON lines of a wheel (its CodeIO member), a ``.jsonl[.gz]`` file or a ``.json`` array."""
    if not path.is_file():
        raise CodeIODataError(f"{path}: no such file")
    try:
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(path) as wheel:
                try:
                    data = wheel.read(WHEEL_MEMBER)
                except KeyError:
                    raise CodeIODataError(f"{path}: the wheel has no {WHEEL_MEMBER}") from None
            return _lines_from_bytes(data, WHEEL_MEMBER)
        return _lines_from_bytes(path.read_bytes(), path.name)
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError, EOFError) as exc:
        raise CodeIODataError(f"{path}: cannot read CodeIO data: {exc}") from exc


def iter_records(lines: list[str]) -> Iterator[CodeIORecord | MalformedRecord]:
    """Parse lines in order; unusable ones come out as :class:`MalformedRecord` values, not raised."""
    index = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            yield parse_record(index, json.loads(line))
        except json.JSONDecodeError as exc:
            yield MalformedRecord(f"record {index}: not JSON: {exc}")
        except MalformedRecord as exc:
            yield exc
        index += 1


def find_or_download_wheel(cache_dir: Path, *, version: str = WHEEL_VERSION) -> Path:
    """The reasoning-gym wheel in ``cache_dir``, fetched with ``pip download --no-deps`` if absent."""
    pattern = f"reasoning_gym-{version}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{WHEEL_NAME}=={version}", "-d", str(cache_dir)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CodeIODataError(f"pip download of {WHEEL_NAME}=={version} failed: {exc}") from exc
    found = sorted(cache_dir.glob(pattern))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CodeIODataError(
            f"pip download of {WHEEL_NAME}=={version} failed (exit {proc.returncode}): {' | '.join(tail)}; "
            "pass --path to a downloaded wheel or to the codeio.jsonl.gz file"
        )
    return found[0]


# --- per-record rules ------------------------------------------------------------------------------


def difficulty_bucket(difficulty: int | None) -> str | None:
    """CodeIO's 1-10 difficulty as the buffer's difficulty string (None when the record has none)."""
    if difficulty is None:
        return None
    for low, high, name in DIFFICULTY_BUCKETS:
        if low <= difficulty <= high:
            return name
    return "competition" if difficulty > 10 else "introductory"


def split_for(record: CodeIORecord, test_fraction: float) -> str:
    """Deterministic split from the reference's content hash: identical references share a split."""
    if test_fraction <= 0:
        return "train"
    digest = hashlib.sha256(record.code_sample.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < test_fraction else "train"


def task_id(dataset: str, record: CodeIORecord) -> str:
    """Stable id of the record's task: ``codeio/0042``."""
    return f"{dataset}/{record.index:04d}"


def main_solution_signature(code: str) -> str | None:
    """``def main_solution(a, b=1):`` as written in the reference (annotations kept), or None."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main_solution":
            args = ast.unparse(node.args)
            returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
            prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
            return f"{prefix} main_solution({args}){returns}:"
    return None


def precheck(record: CodeIORecord) -> str | None:
    """Skip reason found without running anything: ``syntax_error`` or ``malformed_record``, else None."""
    for code in (record.code_sample, record.input_generator):
        try:
            ast.parse(code)
        except (SyntaxError, ValueError):
            return "syntax_error"
    return None if main_solution_signature(record.code_sample) is not None else "malformed_record"


def _docstring_body(text: str) -> str:
    # Backslashes doubled, triple quotes broken and NULs spelled out so the prompt always parses.
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').replace("\0", "\\x00")
    return "\n".join(f"    {line}".rstrip() for line in text.splitlines())


def build_prompt(record: CodeIORecord) -> str:
    """HumanEval-style prompt: the signature with description + spec as docstring, ending in the body.

    A completion appended to it gives the program (prompt + completion defines ``main_solution``),
    the same convention as the HumanEval and MBPP tasks in the buffer.
    """
    signature = main_solution_signature(record.code_sample)
    if signature is None:
        raise MalformedRecord(f"record {record.index}: the reference defines no main_solution")
    doc = _docstring_body(f"{record.task_description}\n\n{record.input_output_spec}")
    return f'{signature}\n    """\n{doc}\n    """\n'


def input_key(kwargs_json: str) -> str:
    """Dedup key of one generated input: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(json.loads(kwargs_json), sort_keys=True, separators=(",", ":"))
