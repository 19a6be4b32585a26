"""``btp import codeio``: CodeIO records -> graded ``call`` tasks in the buffer.

For each record the importer runs ONE sandbox job (the judge's bubblewrap sandbox, never this
process) that generates inputs with a fixed seed, runs the reference ``main_solution`` on them and
re-runs it in a second interpreter with another hash seed (:mod:`.codeio_script`). The host side
(:mod:`.codeio_runner`) keeps the cases whose two runs agree under the judge's ``call`` comparison and
builds a :class:`TaskIn` with ``CallTests(fn_name="main_solution", cases=[CallCase(kwargs=..., expected=...)])``.
Sandbox jobs run ``workers`` at a time (threads; the work is in the sandbox processes). A task goes to
the buffer only once complete, in batches; a skipped record leaves nothing behind.

Top-level imports stay light (typer and the standard library): ``btp --help`` must not pay for the
judge, the buffer or pydantic models.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from services.common.client import BufferClient
    from services.common.schemas.buffer import TaskIn

    from .execution import Equal, RecordOutcome, RunnerConfig, SandboxRun
    from .records import CodeIORecord

log = logging.getLogger(__name__)

DEFAULT_DATASET = "codeio"


@dataclass
class ImportSummary:
    """What an import did: counts per outcome, tests-per-task distribution, time."""

    records: int = 0
    imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_cases: Counter[str] = field(default_factory=Counter)
    tests_per_task: Counter[int] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    difficulties: Counter[str] = field(default_factory=Counter)
    created: int = 0
    updated: int = 0
    elapsed_s: float = 0.0
    sandbox_ms: list[float] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    test_fraction: float = 0.1

    def add_skip(self, reason: str, detail: str, limit: int = 3) -> None:
        """Count one skipped record, keeping a few details per reason for the report."""
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < limit:
            shown.append(detail[:300])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the `--summary-json` file)."""
        tests = [n for n, c in self.tests_per_task.items() for _ in range(c)]
        return {
            "records": self.records,
            "imported": self.imported,
            "skipped": dict(self.skipped.most_common()),
            "skipped_total": sum(self.skipped.values()),
            "dropped_cases": dict(self.dropped_cases.most_common()),
            "tests_per_task": {str(k): v for k, v in sorted(self.tests_per_task.items())},
            "tests_total": sum(tests),
            "tests_mean": round(statistics.fmean(tests), 3) if tests else None,
            "tests_median": statistics.median(tests) if tests else None,
            "splits": dict(self.splits),
            "difficulty": dict(self.difficulties),
            "created": self.created,
            "updated": self.updated,
            "elapsed_s": round(self.elapsed_s, 2),
            "records_per_s": round(self.records / self.elapsed_s, 3) if self.elapsed_s else None,
            "sandbox_ms_median": round(statistics.median(self.sandbox_ms), 1) if self.sandbox_ms else None,
            "skip_examples": self.examples,
        }

    def render(self) -> str:
        """Human-readable summary."""
        d = self.to_dict()
        lines = [
            f"CodeIO import: {d['imported']} of {d['records']} records imported, "
            f"{d['skipped_total']} skipped, {d['elapsed_s']}s ({d['records_per_s']} records/s)",
            f"  buffer: {d['created']} created, {d['updated']} updated; splits {d['splits']}; difficulty {d['difficulty']}",
            f"  tests per task: total {d['tests_total']}, mean {d['tests_mean']}, median {d['tests_median']}, "
            f"distribution {d['tests_per_task']}",
        ]
        for reason, count in d["skipped"].items():
            example = (d["skip_examples"].get(reason) or [""])[0]
            lines.append(f"  skipped {reason}: {count}" + (f"  (e.g. {example[:150]})" if example else ""))
        if d["dropped_cases"]:
            lines.append(f"  dropped cases (tasks still imported when enough remain): {d['dropped_cases']}")
        return "\n".join(lines)


def build_task(
    record: CodeIORecord, outcome: RecordOutcome, *, dataset: str, test_fraction: float, environment: str | None = None
) -> TaskIn:
    """The buffer task of one record that produced cases."""
    from services.common.schemas.buffer import TaskIn
    from services.common.schemas.judge import CallTests

    from .records import build_prompt, difficulty_bucket, split_for, task_id

    metadata: dict[str, Any] = {
        "source": "codeio",
        "codeio_index": record.index,
        "codeio_difficulty": record.difficulty,
        "source_sha256": record.source_hash,
        "reference": record.code_sample,
        "fn_name": "main_solution",
        "call_style": "kwargs",
        "reference_ms": [round(ms, 3) for ms in outcome.reference_ms],
    }
    return TaskIn(
        id=task_id(dataset, record),
        dataset=dataset,
        split=split_for(record, test_fraction),
        prompt=build_prompt(record),
        tests=CallTests(kind="call", fn_name="main_solution", cases=outcome.cases, environment=environment),
        difficulty=difficulty_bucket(record.difficulty),
        metadata=metadata,
    )


def _outcomes(
    records: list[CodeIORecord],
    config: RunnerConfig,
    workers: int,
    sandbox: SandboxRun,
    equal: Equal,
) -> Iterator[tuple[CodeIORecord, RecordOutcome]]:
    """Sandbox runs, ``workers`` in flight, yielded as they finish (bounded queue, no big backlog)."""
    from .execution import RecordOutcome, run_record

    todo = iter(records)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="codeio") as pool:
        running: dict[Future[RecordOutcome], CodeIORecord] = {}

        def submit() -> None:
            record = next(todo, None)
            if record is not None:
                fut = pool.submit(run_record, record, config, sandbox=sandbox, equal=equal)
                running[fut] = record

        for _ in range(workers * 2):
            submit()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                record = running.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # the sandbox itself failed: stop, nothing half-imported
                    raise RuntimeError(f"sandbox failed on CodeIO record {record.index}: {exc}") from exc
                if outcome is None:  # pragma: no cover - defensive
                    outcome = RecordOutcome(index=record.index, skip_reason="crashed")
                yield record, outcome
                submit()


def import_codeio(
    records: Iterable[CodeIORecord | Exception],
    *,
    config: RunnerConfig,
    sink: Callable[[list[TaskIn]], tuple[int, int]] | None,
    dataset: str = DEFAULT_DATASET,
    test_fraction: float = 0.1,
    workers: int = 2,
    batch_size: int = 50,
    sandbox: SandboxRun | None = None,
    equal: Equal | None = None,
    progress: Callable[[ImportSummary], None] | None = None,
    on_outcome: Callable[[CodeIORecord, RecordOutcome], None] | None = None,
    environment: str | None = None,
) -> ImportSummary:
    """Run every record in the sandbox and hand complete tasks to ``sink`` in batches.

    ``sink(tasks) -> (created, updated)``; None is a dry run. Malformed records (exceptions in
    ``records``) are counted as ``malformed_record``.
    """
    from ...connect import judge_equal, judge_sandbox
    from .records import precheck

    equal = equal or judge_equal()
    summary = ImportSummary(test_fraction=test_fraction)
    started = time.monotonic()
    good: list[CodeIORecord] = []
    for item in records:
        summary.records += 1
        if isinstance(item, Exception):
            summary.add_skip("malformed_record", str(item))
            continue
        reason = precheck(item)
        if reason is not None:
            summary.add_skip(
                reason, f"record {item.index}: the reference does not parse or defines no main_solution"
            )
            continue
        good.append(item)

    pending: list[TaskIn] = []

    def flush() -> None:
        if pending and sink is not None:
            created, updated = sink(list(pending))
            summary.created += created
            summary.updated += updated
        pending.clear()

    with ExitStack() as stack:
        run = sandbox if sandbox is not None else stack.enter_context(judge_sandbox(workers, environment))
        for record, outcome in _outcomes(good, config, max(1, workers), run, equal):
            _record_outcome(summary, record, outcome)
            if on_outcome is not None:
                on_outcome(record, outcome)
            if outcome.ok:
                pending.append(
                    build_task(record, outcome, dataset=dataset, test_fraction=test_fraction, environment=environment)
                )
                if len(pending) >= batch_size:
                    flush()
            summary.elapsed_s = time.monotonic() - started
            if progress is not None:
                progress(summary)
    flush()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _record_outcome(summary: ImportSummary, record: CodeIORecord, outcome: RecordOutcome) -> None:
    from .records import difficulty_bucket, split_for

    summary.sandbox_ms.append(outcome.wall_ms)
    summary.dropped_cases.update(outcome.dropped)
    if not outcome.ok:
        summary.add_skip(outcome.skip_reason or "crashed", f"record {record.index}: {outcome.detail}")
        return
    summary.imported += 1
    summary.tests_per_task[len(outcome.cases)] += 1
    summary.splits[split_for(record, summary.test_fraction)] += 1
    summary.difficulties[difficulty_bucket(record.difficulty) or "none"] += 1


def load_records(path: Path | None, cache_dir: Path) -> list[CodeIORecord | Exception]:
    """Records from ``path`` (wheel, .jsonl[.gz], .json), else from the cached/downloaded wheel."""
    from .records import find_or_download_wheel, iter_records, read_raw_lines

    source = path if path is not None else find_or_download_wheel(cache_dir)
    return list(iter_records(read_raw_lines(source)))


def load_run_slice(
    path: Path, *, test_fraction: float, train_size: int, test_size: int, workers: int = 2,
    environment: str | None = None,
) -> list[TaskIn]:
    """CodeIO tasks for ``btp run --dataset codeio`` and ``btp experiment``: per split, the records that
    :func:`~services.pipeline.datasets.loaders.select` would take first (hash order of the task id), twice
    as many as asked for because the sandbox drops some; only those run (about 5 records/s). With a judge
    ``environment`` (numpy ...) the references run there and every task's tests name it."""
    from ..loaders import hash_order
    from .execution import RunnerConfig
    from .records import precheck, split_for, task_id

    records = [r for r in load_records(path, path.parent) if not isinstance(r, Exception) and precheck(r) is None]
    chosen: list[CodeIORecord] = []
    for split, size in (("train", train_size), ("test", test_size)):
        same = [r for r in records if split_for(r, test_fraction) == split]
        chosen += sorted(same, key=lambda r: hash_order(task_id(DEFAULT_DATASET, r)))[: 2 * size]
    tasks: list[TaskIn] = []

    def collect(batch: list[TaskIn]) -> tuple[int, int]:
        tasks.extend(batch)
        return len(batch), 0

    import_codeio(chosen, config=RunnerConfig(), sink=collect, test_fraction=test_fraction, workers=workers,
                  environment=environment)  # fmt: skip
    return tasks


def buffer_sink(client: BufferClient) -> Callable[[list[TaskIn]], tuple[int, int]]:
    """``sink`` that upserts a batch of tasks into the buffer."""

    def sink(tasks: list[TaskIn]) -> tuple[int, int]:
        response = client.upsert_tasks(tasks)
        return response.created, response.updated

    return sink


def _select(records: list[Any], start: int, limit: int | None, only: str | None) -> list[Any]:
    if only:
        wanted = {int(part) for part in only.split(",") if part.strip()}
        return [r for i, r in enumerate(records) if i in wanted]
    end = None if limit is None else start + limit
    return records[start:end]


def codeio_command(
    path: Annotated[
        Path | None,
        typer.Option(
            help="A reasoning-gym wheel, or a codeio .jsonl/.jsonl.gz/.json file; "
            "unset = download the wheel (pip download --no-deps) into the data dir."
        ),
    ] = None,
    tests: Annotated[
        int, typer.Option(min=1, max=1000, help="Tests per task (distinct generated inputs).")
    ] = 10,
    seed: Annotated[int, typer.Option(help="Seed of generate_inputs' Random.")] = 0,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of tasks put in the test split.")
    ] = 0.1,
    dataset: Annotated[
        str, typer.Option(help="Dataset name in the buffer (task ids are <dataset>/<index>).")
    ] = DEFAULT_DATASET,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Sandbox runs in parallel.")] = 2,
    start: Annotated[int, typer.Option(min=0, help="First record index.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Import at most this many records.")] = None,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated record indices (overrides --start/--limit).")
    ] = None,
    case_time: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=60,
            help="Seconds per reference (or generator) call; slower cases are dropped (the judge allows 2 s).",
        ),
    ] = 1.0,
    task_time: Annotated[
        float, typer.Option(min=1, max=600, help="Seconds for one record's whole sandbox run.")
    ] = 60.0,
    memory_mb: Annotated[
        int,
        typer.Option(
            min=64, max=65536, help="Sandbox memory limit, MiB (the judge's default per-case limit is 512)."
        ),
    ] = 512,
    min_tests: Annotated[int, typer.Option(min=1, help="Skip a task with fewer tests than this.")] = 1,
    max_case_bytes: Annotated[
        int, typer.Option(min=100, help="Largest input+output JSON per test, bytes.")
    ] = 100_000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Run everything but write nothing to the buffer.")
    ] = False,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary as JSON here.")] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            help="Judge environment (BTP_JUDGE_ENVIRONMENTS, e.g. one made by deploy/judge-env.sh with numpy) "
            "to run the references in; stored on the tasks, so their programs are judged there too. Keeps "
            "the tasks whose references need those packages."
        ),
    ] = None,
    outcomes_jsonl: Annotated[
        Path | None, typer.Option(help="Write one JSON line per record (index, skip reason, detail, tests).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout (progress on stderr).")
    ] = False,
) -> None:
    """Import CodeIO: run each record's generator and reference in the judge's sandbox, store call tasks."""
    from ...settings import Settings
    from .execution import RunnerConfig
    from .records import CodeIODataError

    settings = Settings()
    try:
        records = _select(load_records(path, settings.data_dir / "downloads"), start, limit, only)
    except CodeIODataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    config = RunnerConfig(tests=tests, seed=seed, case_time_s=case_time, task_time_s=task_time,
                          memory_mb=memory_mb, min_tests=min_tests, max_case_bytes=max_case_bytes)  # fmt: skip
    seen = [0]

    def progress(s: ImportSummary) -> None:
        done = s.imported + sum(s.skipped.values())
        reporter.advance(done - seen[0])
        seen[0] = done

    from rich.console import Console

    from ...run.progress import console_reporter

    with ExitStack() as stack:
        # a bar on a terminal, else a line per phase with counts and rates; stdout keeps the summary
        reporter = stack.enter_context(console_reporter(Console(stderr=True)))
        reporter.phase(f"codeio: {len(records)} records through the sandbox", len(records))
        on_outcome = None
        if outcomes_jsonl is not None:
            outcomes_jsonl.parent.mkdir(parents=True, exist_ok=True)
            stream = stack.enter_context(outcomes_jsonl.open("w", encoding="utf-8"))

            def on_outcome(record: CodeIORecord, outcome: RecordOutcome) -> None:
                line = {"index": record.index, "skip_reason": outcome.skip_reason, "detail": outcome.detail[:500],
                        "tests": len(outcome.cases), "dropped": outcome.dropped, "wall_ms": round(outcome.wall_ms, 1)}  # fmt: skip
                stream.write(json.dumps(line) + "\n")

        sink = None
        if not dry_run:
            from ...connect import open_buffer

            sink = buffer_sink(open_buffer(stack, settings))
        summary = import_codeio(records, config=config, sink=sink, dataset=dataset, test_fraction=test_fraction,
                                workers=workers, progress=progress, on_outcome=on_outcome,
                                environment=environment)  # fmt: skip
    if json_output:
        typer.echo(json.dumps(summary.to_dict()))
    else:
        typer.echo(summary.render())
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
