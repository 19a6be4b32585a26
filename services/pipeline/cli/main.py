"""The `btp` command line (typer + rich): run, serve, worker, stack up, import, model prepare, report, sweep.

(Over 500 lines: one typer app whose commands are thin; the long parts are option declarations, and the
work lives in ``run/``, ``datasets/``, ``experiments/`` and ``stack.py``.)

Settings come from the environment (``BTP_*``) and are built here, never at import time. Service URLs
(``BTP_GENERATOR_URL`` ...) select a remote stack; unset, `btp run` embeds every service in-process.

Every mistake on the command line is one line on stderr and exit code 2, in click's words: ``error: Invalid
value for '--scheme': 'nope' is not one of 'rank', 'proportional', 'uniform'.`` Choice lists come from where
the values are defined (the data set loaders, the wire schemas' literals, the services); a value that
only :class:`RunConfig` can judge is reported under its option's name (:func:`config_error`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import pydantic
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from services.common.errors import BTPError
from services.common.schemas.buffer import Possibility, Scheme
from services.common.schemas.generator import PromptFormat
from services.common.settings import DASHBOARD_PORT, DEFAULT_PORTS, DEFAULT_TRAIN_QUEUE
from services.common.startup import StartupError, exit_with, one_line

from ..datasets.loaders import ALL_DATASETS, DATASETS, OFFLINE_DATASETS
from ..run.config import RunConfig, TeacherConfig
from ..run.progress import console_reporter
from ..settings import Settings

err_console = Console(stderr=True, soft_wrap=True, highlight=False)


class OneLineErrors(TyperGroup):
    """The root command: a usage error is ``error: <click's message>`` on one line and exit code 2 (typer
    prints the usage, a hint and a box around the message)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def call() -> Any:
            return super(OneLineErrors, self).main(args, prog_name, complete_var, False, windows_expand_args, **extra)

        if not standalone_mode:
            return call()
        try:
            code = call()
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        except StartupError as exc:  # a dependency of the command itself (the buffer's database, a service URL)
            exit_with(str(exc), exc)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `btp` alone: the help, as typer shows it
                from typer import rich_utils

                rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
            else:
                print_error(usage_message(exc))
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def usage_message(exc: typer.TyperException) -> str:
    """The error's message; where typer's own pydantic coercion failed, with the value it refused."""
    cause = exc.__cause__
    if isinstance(exc, typer.BadParameter) and isinstance(cause, pydantic.ValidationError) and cause.errors():
        err = cause.errors()[0]
        exc.message = f"{err.get('input')!r} {should(str(err['msg']))}"
    return exc.format_message()


def should(msg: str) -> str:
    """A pydantic message as the end of a sentence about the value: ``should be greater than 0``."""
    msg = msg.removeprefix("Value error, ")
    return re.sub(r"^(Input|String|List|Dictionary|Value) should", "should", msg)


def print_error(message: str) -> None:
    """``error: message`` on stderr, one line whatever the terminal's width (no rich markup in message)."""
    err_console.print(Text.assemble(("error:", "red"), " ", one_line(message)))


app = typer.Typer(help="BTP: beam search sampling, testing, P2Value prioritized replay, fine-tuning.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=OneLineErrors)  # fmt: skip
stack_app = typer.Typer(help="The full stack as local processes.", no_args_is_help=True)
model_app = typer.Typer(help="Offline models.", no_args_is_help=True)
import_app = typer.Typer(help="Import a data set into the buffer (deterministic train/test split).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(model_app, name="model")
app.add_typer(import_app, name="import")
console = Console()
SERVICE_NAMES = tuple(DEFAULT_PORTS)
"""generator, judge, buffer, trainer: the services with a default port."""
_D = {name: field.default for name, field in RunConfig.model_fields.items()}
"""RunConfig's defaults: the CLI shows and uses exactly these."""
IMPORT_CHUNK = 500
"""Tasks per upsert request of `btp import`."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def choice(values: Any, metavar: str | None = None) -> dict[str, Any]:
    """``typer.Option`` arguments accepting only ``values`` (a tuple, or a ``Literal`` type whose arguments are
    the values), shown in --help; anything else is ``'x' is not one of 'a', 'b'.`` as click says it."""
    allowed = tuple(get_args(values) or values)

    def parse(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(repr(a) for a in allowed)}.")
        return value

    return {"parser": parse, "metavar": metavar or f"[{'|'.join(allowed)}]"}


def bad_option(option: str, value: Any, message: str) -> typer.BadParameter:
    """``Invalid value for '--option': <value> <message>`` (click's wording)."""
    return typer.BadParameter(f"{value!r} {message}", param_hint=f"'{option}'")


# --- serve / worker / model --------------------------------------------------------------------------


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICE_NAMES)}.", **choice(SERVICE_NAMES, "NAME"))],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: the service's: 8001-8004).")] = None,
) -> None:
    """Serve one service with uvicorn on its create_app factory (a missing dependency: one line, exit 1)."""
    import socket

    import uvicorn

    port = port or DEFAULT_PORTS[name]
    try:  # before the factory loads a model: a busy port is the most common mistake of all
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        exit_with(f"{name} cannot start: cannot listen on {host}:{port}: {why} (set --host/--port)", exc)
    uvicorn.run(f"services.{name}.app:create_app", factory=True, host=host, port=port)


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = DASHBOARD_PORT,
) -> None:
    """Serve the live dashboard: run folders under BTP_DATA_DIR/runs and the services at BTP_*_URL."""
    import uvicorn

    console.print(f"dashboard on http://{host}:{port}/ (runs in {Settings().runs_dir()})", highlight=False)
    uvicorn.run("services.pipeline.dashboard.app:create_app", factory=True, host=host, port=port, log_level="warning")


@app.command()
def worker(
    queue: Annotated[str | None, typer.Option(help="Celery queue (default BTP_TRAINER_QUEUE or btp-train).")] = None,
    loglevel: Annotated[str | None, typer.Option(help="Celery log level (default BTP_LOG_LEVEL or INFO).")] = None,
) -> None:
    """Start the trainer's Celery worker (one job at a time)."""
    from services.trainer.settings import Settings as TrainerSettings

    trainer = TrainerSettings()
    queue = queue or trainer.queue
    loglevel = loglevel or trainer.log_level
    cmd = [sys.executable, "-m", "celery", "-A", "services.trainer.worker", "worker", "--pool=solo",
           "--concurrency=1", "-Q", queue, f"--loglevel={loglevel}"]  # fmt: skip
    os.execv(sys.executable, cmd)


@model_app.command("prepare")
def model_prepare(
    name: Annotated[str, typer.Argument(help="Known model name or local HF folder.")] = "SmolLM2-135M-Instruct",
) -> None:
    """Convert an offline model (e.g. the SmolLM2 GGUF wheel) into a cached HF folder."""
    from services.models import prepare_model

    settings = Settings()
    start = time.perf_counter()
    path = prepare_model(name, settings.models_dir())
    console.print(f"{name}: {path} ({time.perf_counter() - start:.1f}s)")


# --- import ----------------------------------------------------------------------------------------


def do_import(name: str, path: Path | None, test_fraction: float, split: str | None, json_output: bool = False) -> None:
    """Load a data set and upsert its good records; report every bad record by name.

    Progress: a bar per phase on a terminal, else a line per phase with counts and rates; ``json_output``
    prints the result as one JSON object on stdout (progress on stderr)."""
    from contextlib import ExitStack

    from ..connect import open_buffer
    from ..datasets.loaders import load_dataset

    settings = Settings()
    out = Console(stderr=True) if json_output else console
    if name == "mbpp" and path is None and settings.mbpp_path:
        path = settings.mbpp_path
    imported = 0
    with console_reporter(out) as reporter:
        reporter.phase(f"{name}: reading", 1)
        try:
            result = load_dataset(name, path, test_fraction=test_fraction, split=split)
        except (FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from exc
        reporter.advance(1)
        if result.tasks:
            with ExitStack() as stack:
                buffer = open_buffer(stack, settings)
                reporter.phase(f"{name}: storing tasks in the buffer", len(result.tasks))
                for i in range(0, len(result.tasks), IMPORT_CHUNK):
                    part = result.tasks[i : i + IMPORT_CHUNK]
                    try:
                        imported += len(buffer.upsert_tasks(part).ids)
                    except BTPError as exc:
                        raise _fail(f"the buffer refused the import: {exc.message}") from exc
                    reporter.advance(len(part))
    splits = {s: sum(t.split == s for t in result.tasks) for s in ("train", "test")}
    if json_output:
        print(json.dumps({"dataset": name, "imported": imported, "splits": splits, "bad_records": len(result.errors),
                          "errors": [str(e) for e in result.errors]}))
    else:
        console.print(f"{name}: imported {imported} tasks (train {splits['train']}, test {splits['test']})")
        for err in result.errors:
            console.print(f"[red]bad record[/red] {err}")
    if result.errors:
        raise typer.Exit(1)


def _import_command(name: str) -> None:
    def command(
        path: Annotated[Path | None, typer.Option(help="Source file (default: the offline copy, if any).")] = None,
        test_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of tasks in the test split.")] = 0.5,
        split: Annotated[str | None, typer.Option(help="Force every task into this split.")] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (progress on stderr).")] = False,
    ) -> None:
        do_import(name, path, test_fraction, split, json_output)

    command.__doc__ = f"Import {name} into the buffer."
    import_app.command(name)(command)


for _name in DATASETS:
    _import_command(_name)

try:  # the CodeIO importer is its own module (its own engineer); register it when present
    from ..datasets.codeio.importer import codeio_command

    import_app.command("codeio")(codeio_command)
except ImportError:  # pragma: no cover - depends on the optional module
    pass

try:  # the paper's experiments at small scale (docs/results.md)
    from ..experiments.command import experiment_command

    app.command("experiment", help="The paper's experiments at small scale: replay ablations, alpha sweep, "
                "beam vs sampling, teacher -> student, with bootstrap CIs.")(experiment_command)
except ImportError:  # pragma: no cover - depends on the optional module
    pass


# --- run -------------------------------------------------------------------------------------------


def _teacher(url: str | None, openai_url: str | None, openai_model: str | None, jsonl: Path | None) -> TeacherConfig | None:
    given = [name for name, x in (("--teacher-url", url), ("--teacher-openai-url", openai_url),
                                  ("--teacher-jsonl", jsonl)) if x]  # fmt: skip
    if len(given) > 1:
        raise typer.BadParameter("give at most one teacher", param_hint=given)
    if openai_url and not openai_model:
        raise bad_option("--teacher-openai-url", openai_url, "needs --teacher-model (the model name at that endpoint)")
    if url:
        return TeacherConfig(kind="generator", url=url)
    if openai_url:
        return TeacherConfig(kind="openai", url=openai_url, model=openai_model)
    if jsonl:
        return TeacherConfig(kind="jsonl", path=str(jsonl.resolve()))
    return None


_OPTION_FIELDS = {"lr": "learning_rate", "dataset": "datasets"}
"""CLI option names that differ from their RunConfig field."""
_FIELD_OPTIONS = {field: option for option, field in _OPTION_FIELDS.items()} | {
    "dataset_paths": "dataset_path", "asynchronous": "async", "budget_programs": "budget", "budget_seconds": "budget"}


def config_error(exc: pydantic.ValidationError) -> typer.BadParameter:
    """RunConfig's first complaint as a usage error naming the option: ``Invalid value for '--lr': -1.0 should
    be greater than 0``."""
    err = exc.errors()[0]
    msg = should(str(err["msg"]))
    if not err["loc"]:
        return typer.BadParameter(msg, param_hint="the options")
    field = str(err["loc"][0])
    option = "--" + _FIELD_OPTIONS.get(field, field).replace("_", "-")
    return bad_option(option, err.get("input"), msg)


def check_model(model: str, settings: Settings) -> None:
    """An embedded generator can serve ``model`` (a known name with its wheel, or a local folder)."""
    from services.models import check_available

    try:
        check_available(model, settings.models_dir())
    except BTPError as exc:
        why = re.sub(rf"^(unknown )?model {re.escape(repr(model))}:? ?", "", exc.message)
        raise bad_option("--model", model, why if why.startswith("is ") else f"is {why}") from exc


def check_datasets(datasets: list[str], paths: dict[str, str]) -> None:
    """Every source file names a data set, and every data set without a copy here has its file."""
    for name in paths:
        if name not in ALL_DATASETS:
            raise bad_option("--dataset-path", name, f"is not a data set; choose from {', '.join(ALL_DATASETS)}")
    for name in datasets:
        if name not in OFFLINE_DATASETS and name not in paths:
            raise bad_option("--dataset", name, f"is not available offline: give its file with --dataset-path {name}=FILE")


def parse_budget(text: str | None) -> tuple[int | None, float | None]:
    """``--budget``: a number of trained programs (``640``) or a wall time (``600s``, ``30m``, ``2h``)."""
    if text is None:
        return None, None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if m is None or float(m.group(1)) <= 0 or (not m.group(2) and "." in m.group(1)):
        raise bad_option("--budget", text, "should be a number of programs (640) or a wall time (600s, 30m, 2h)")
    if not m.group(2):
        return int(m.group(1)), None
    return None, float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def async_summary(settings: Settings, name: str | None) -> dict[str, Any]:
    """An async run's counters and lag (``metrics/async.json``) without the per-version loss lists."""
    path = settings.runs_dir() / (name or "") / "metrics" / "async.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data["versions"] = [{k: v for k, v in rec.items() if k != "loss"} for rec in data.get("versions", [])]
    return data


def run_config(options: dict[str, Any], settings: Settings, **fixed: Any) -> RunConfig:
    """A RunConfig from a command's options (every option named like a field, or in :data:`_OPTION_FIELDS`):
    `btp run` and `btp sweep` build their configurations here, so no option is dropped on the way."""
    values = {_OPTION_FIELDS.get(k, k): v for k, v in options.items()}
    values = {k: v for k, v in values.items() if k in RunConfig.model_fields and v is not None}
    values.setdefault("model", settings.default_model)
    values.setdefault("datasets", ["mbpp"])
    return RunConfig.model_validate(values | fixed)


def print_table(metrics: list[dict[str, Any]], title: str) -> None:
    """The before/after table."""
    from ..run.report import table_rows

    rows = table_rows(metrics)
    table = Table(title=title)
    for col in ("round", "tasks", "pass rate", "accuracy", "per data set (pass rate / accuracy)", "seconds"):
        table.add_column(col, justify="right" if col != "per data set (pass rate / accuracy)" else "left")
    for r in rows:
        groups = {**r["by_dataset"], **r["by_difficulty"]}
        per = ", ".join(f"{k} {v['pass_rate']:.3f}/{v['accuracy']:.3f}" for k, v in groups.items())
        label = "before" if r["round"] == 0 else f"after {r['round']}"
        table.add_row(label, str(r["tasks"]), f"{r['pass_rate']:.4f}", f"{r['accuracy']:.4f}", per, f"{r['seconds']:.0f}")
    console.print(table)


def execute(
    cfg: RunConfig | None, resume: str | None, settings: Settings, quiet: bool = False, out: Console | None = None,
) -> list[dict[str, Any]]:
    """Create or resume a run folder and drive Algorithm 1 to the end.

    Progress goes to ``out`` (default the console): rich bars on a terminal, else a line per phase (logs).
    """
    out = out or console
    from ..connect import check_remote_services, open_services
    from ..run.asynchronous import AsyncPipeline
    from ..run.folder import RunFolder
    from ..run.loop import Pipeline, SilentReporter, load_tasks
    from ..run.progress import FolderReporter
    from ..run.samplers import GeneratorSampler, JsonlSampler, OpenAISampler, Sampler

    runs = settings.runs_dir()
    mbpp = str(settings.mbpp_path) if settings.mbpp_path else None
    check_remote_services(settings)  # a service that does not answer: before any folder or model
    if resume:
        folder = RunFolder.open(runs, resume)
        cfg = folder.config()
        tasks = load_tasks(cfg, mbpp)
    else:
        if cfg is None:
            raise ValueError("a new run needs a configuration (or --resume NAME)")
        tasks = load_tasks(cfg, mbpp)  # bad data set options fail here, before any folder or model
        folder = RunFolder.create(runs, cfg)
    # the run is alive from here (the dashboard shows it running while the model loads) to its end
    progress = FolderReporter(SilentReporter(), folder.path / "progress.json")
    with progress.running(), open_services(settings, model=cfg.model, buffer_database_url=folder.buffer_database_url(),
                                           checkpoints=folder.path / "checkpoints") as services:  # fmt: skip
        sampler: Sampler | None = None
        t = cfg.teacher
        if t is not None and t.kind == "generator":
            from services.common.client import GeneratorClient

            client = GeneratorClient(t.url, token=settings.api_token, timeout=settings.service_timeout_s)
            sampler = GeneratorSampler(client, source=f"teacher:{t.url}", max_new_tokens=cfg.max_new_tokens,
                                       stop=cfg.stops(), prompt_format=cfg.prompt_format, batch=cfg.gen_batch)  # fmt: skip
        elif t is not None and t.kind == "openai":
            sampler = OpenAISampler(t.url or "", t.model or "", max_new_tokens=cfg.max_new_tokens, stop=cfg.stops(),
                                    prompt_format=cfg.prompt_format, api_key_env=t.api_key_env)  # fmt: skip
        elif t is not None and t.kind == "jsonl":
            sampler = JsonlSampler(Path(t.path or ""))
        runner: type[Pipeline] = AsyncPipeline if cfg.asynchronous else Pipeline  # sampling/judging/training at once
        if quiet:
            return runner(cfg, folder, services, sampler=sampler, reporter=SilentReporter(), tasks=tasks,
                          progress=progress).run()
        out.print(f"run [bold]{folder.name}[/bold] in {folder.path} ({services.mode}); model {cfg.model}")
        head = f"({', '.join(cfg.datasets)}); {cfg.rounds} round(s), k={cfg.k}"
        if cfg.asynchronous:
            budget = f"{cfg.program_budget()} programs" if cfg.program_budget() else f"{cfg.budget_seconds:.0f} s"
            head = f"({', '.join(cfg.datasets)}); async, budget {budget}, k={cfg.k}, max lag {cfg.max_lag}"
        with console_reporter(out) as reporter:
            pipe = runner(cfg, folder, services, sampler=sampler, reporter=reporter, tasks=tasks, progress=progress)
            out.print(f"{len(pipe.train_tasks)} train / {len(pipe.test_tasks)} held-out tasks {head}")
            return pipe.run()


@app.command()
def run(
    resume: Annotated[str | None, typer.Option(help="Resume the run of this name (other options ignored).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default run-<date>-<time>).")] = None,
    model: Annotated[str | None, typer.Option(help="Student model: known name or HF folder.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Data set(s); repeat to mix.", **choice(ALL_DATASETS))] = None,
    dataset_path: Annotated[list[str] | None, typer.Option(help="NAME=PATH source file of a data set (apps, codecontests and codeio need one; codeio: a reasoning-gym wheel or codeio.jsonl[.gz]).")] = None,
    train_size: Annotated[int, typer.Option(min=1, help="Train tasks per data set.")] = _D["train_size"],
    test_size: Annotated[int, typer.Option(min=1, help="Held-out tasks per data set.")] = _D["test_size"],
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="Share of a data set in the test split.")] = _D["test_fraction"],
    rounds: Annotated[int, typer.Option(min=0, help="Rounds of Algorithm 1.")] = _D["rounds"],
    k: Annotated[int, typer.Option(min=1, max=16, help="Beams per task (top-k programs).")] = _D["k"],
    max_new_tokens: Annotated[int, typer.Option(min=8, help="Generated tokens per program at most.")] = _D["max_new_tokens"],
    prompt_format: Annotated[str, typer.Option(help="The generator's prompt_format.", **choice(PromptFormat))] = _D["prompt_format"],
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="P2Value weight of the possibility (Eq. 6).")] = _D["alpha"],
    priority_exponent: Annotated[float, typer.Option(min=0.0, max=10.0, help="Exponent of Eq. 7.")] = _D["priority_exponent"],
    scheme: Annotated[str, typer.Option(help="PPER sampling scheme (Eq. 7).", **choice(Scheme))] = _D["scheme"],
    possibility: Annotated[str, typer.Option(help="Possibility P(t) of a program (Eq. 6).", **choice(Possibility))] = _D["possibility"],
    n: Annotated[int, typer.Option(min=1, help="PPER minibatch size per step.")] = _D["n"],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per round.")] = _D["steps"],
    lr: Annotated[float, typer.Option(help="Learning rate.")] = _D["learning_rate"],
    lora: Annotated[bool, typer.Option(help="LoRA instead of full fine-tuning.")] = _D["lora"],
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = _D["lora_r"],
    judge_time_s: Annotated[float, typer.Option(help="Judge wall time per case, seconds.")] = _D["judge_time_s"],
    judge_memory_mb: Annotated[int, typer.Option(help="Judge memory limit, MiB.")] = _D["judge_memory_mb"],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the PPER draws and training.")] = _D["seed"],
    teacher_url: Annotated[str | None, typer.Option(help="Sample with the generator at this URL (teacher).")] = None,
    teacher_openai_url: Annotated[str | None, typer.Option(help="Sample with an OpenAI-compatible endpoint (…/v1).")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Model name at the OpenAI-compatible endpoint.")] = None,
    teacher_jsonl: Annotated[Path | None, typer.Option(help="Programs from a JSONL file (task_id, program, logprob).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout (progress on stderr).")] = False,
    asynchronous: Annotated[bool, typer.Option("--async", help="Sample, judge and train at once (actors, judge and trainer loops) instead of lockstep rounds.")] = False,
    actors: Annotated[int, typer.Option(min=1, max=64, help="Async: sampling threads.")] = _D["actors"],
    publish_every: Annotated[int | None, typer.Option(min=1, help="Async: optimizer steps per published weights version (default --steps).")] = None,
    max_lag: Annotated[int, typer.Option(min=0, help="Async: versions sampling may run ahead of training (0: lockstep schedule).")] = _D["max_lag"],
    eval_every: Annotated[int | None, typer.Option(min=1, help="Async: held-out evaluation every N versions (default one round's steps).")] = None,
    budget: Annotated[str | None, typer.Option(help="Async: stop after N trained programs, or after a wall time like 600s / 30m / 2h (default rounds x steps x n programs).")] = None,
) -> None:
    """Algorithm 1: sample, judge, replay (PPER), fine-tune; evaluate before and after each round."""
    settings = Settings()
    cfg: RunConfig | None = None
    if not resume:
        budget_programs, budget_seconds = parse_budget(budget)
        paths: dict[str, str] = {}
        for item in dataset_path or []:
            key, _, value = item.partition("=")
            if not value:
                raise bad_option("--dataset-path", item, "should be NAME=PATH")
            paths[key] = str(Path(value).resolve())
        check_datasets(dataset or ["mbpp"], paths)
        if model is not None and not settings.generator_url:
            check_model(model, settings)
        options = dict(locals())
        try:
            cfg = run_config(options, settings, name=name or time.strftime("run-%Y%m%d-%H%M%S"), dataset_paths=paths,
                             teacher=_teacher(teacher_url, teacher_openai_url, teacher_model, teacher_jsonl))  # fmt: skip
        except pydantic.ValidationError as exc:
            raise config_error(exc) from exc
    start = time.perf_counter()
    try:
        metrics = execute(cfg, resume, settings, out=Console(stderr=True) if json_output else None)
    except KeyboardInterrupt:
        name = resume or (cfg.name if cfg is not None else "")
        raise _fail(f"stopped; the run folder is consistent: go on with btp run --resume {name}", 130) from None
    except StartupError as exc:
        exit_with(f"run cannot start: {exc}", exc)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), 2) from exc
    except BTPError as exc:
        raise _fail(f"{type(exc).__name__}: {exc.message}") from exc
    seconds = time.perf_counter() - start
    if json_output:
        from ..run.report import table_rows

        name = resume or (cfg.name if cfg is not None else None)
        result: dict[str, Any] = {"run": name, "seconds": round(seconds, 1), "rounds": table_rows(metrics)}
        if metrics and "async" in metrics[-1]:
            result["async"] = async_summary(settings, name)
        print(json.dumps(result))
        return
    print_table(metrics, f"held-out split, greedy program per task ({seconds:.0f}s)")


# --- stack / report / sweep ------------------------------------------------------------------------


@stack_app.command("up")
def stack_up(
    host: Annotated[str, typer.Option(help="Bind address of every service.")] = "127.0.0.1",
    generator_port: Annotated[int, typer.Option(help="Generator port.")] = DEFAULT_PORTS["generator"],
    judge_port: Annotated[int, typer.Option(help="Judge port.")] = DEFAULT_PORTS["judge"],
    buffer_port: Annotated[int, typer.Option(help="Buffer port.")] = DEFAULT_PORTS["buffer"],
    trainer_port: Annotated[int, typer.Option(help="Trainer API port.")] = DEFAULT_PORTS["trainer"],
    dashboard_port: Annotated[int, typer.Option(help="Dashboard port.")] = DASHBOARD_PORT,
    model: Annotated[str | None, typer.Option(help="Model the generator serves (BTP_GENERATOR_MODEL).")] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL (default BTP_DATABASE_URL or local btp).")] = None,
    queue: Annotated[str, typer.Option(help="Celery queue of the trainer.")] = DEFAULT_TRAIN_QUEUE,
    health_timeout: Annotated[float, typer.Option(help="Seconds to wait for every /health.")] = 600.0,
    generators: Annotated[int, typer.Option(
        min=1, help="Generator replicas, one GPU each (replica i: generator port + 10·i, i-th visible GPU); "
        "the clients spread requests over them.")] = 1,
) -> None:
    """Start PostgreSQL, Redis, the four services and a Celery worker; stop them on Ctrl-C/SIGTERM."""
    from .stack import DEFAULT_DATABASE_URL, Stack, StackConfig

    settings = Settings()
    cfg = StackConfig(host=host, ports={"generator": generator_port, "judge": judge_port, "buffer": buffer_port,
                                        "trainer": trainer_port, "dashboard": dashboard_port},
                      database_url=database_url or settings.database_url or DEFAULT_DATABASE_URL,
                      redis_url=settings.redis_url, data_dir=settings.data_dir, model=model,
                      api_token=settings.api_token, queue=queue, health_timeout_s=health_timeout,
                      generators=generators)  # fmt: skip
    stack = Stack(cfg)
    console.print(f"starting the stack (logs in {stack.logs})")
    try:
        stack.start()
    except (BTPError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for msg in stack.messages:
        console.print(msg)
    for name in SERVICE_NAMES:
        console.print(f"  {name:<9} {cfg.url(name)}  (pid {stack.procs[name].pid})")
    for name in cfg.generator_names()[1:]:
        console.print(f"  {name:<9} {cfg.url(name)}  (pid {stack.procs[name].pid})")
    console.print(f"  worker    queue {queue}  (pid {stack.procs['worker'].pid})")
    console.print(f"  dashboard {cfg.url('dashboard')}/  (pid {stack.procs['dashboard'].pid})")
    console.print("stack ready; Ctrl-C stops it", highlight=False)
    reason = stack.watch()
    console.print(f"stopping ({reason})")
    stack.stop()
    console.print("stopped")
    if "exited" in reason:
        raise typer.Exit(1)


@app.command()
def report(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name (under BTP_DATA_DIR/runs) or folder.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default <run>/report).")] = None,
) -> None:
    """Write an HTML report with plots of a run."""
    from ..run.folder import RunFolder
    from ..run.report import write_report

    try:
        folder = RunFolder.open(Settings().runs_dir(), run_name)
    except FileNotFoundError as exc:
        raise _fail(str(exc), 2) from exc
    path = write_report(folder, out)
    print_table(folder.metrics(), f"run {folder.name}")
    console.print(f"report: {path}")


@app.command()
def sweep(
    alphas: Annotated[str, typer.Option(help="Comma-separated alpha values.")] = "0,0.25,0.5,0.75,1",
    name: Annotated[str | None, typer.Option(help="Sweep name (runs are <name>-alpha<a>).")] = None,
    model: Annotated[str | None, typer.Option(help="Student model.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Data set(s) with a copy here.", **choice(OFFLINE_DATASETS))] = None,
    train_size: Annotated[int, typer.Option(min=1)] = _D["train_size"],
    test_size: Annotated[int, typer.Option(min=1)] = _D["test_size"],
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99)] = _D["test_fraction"],
    rounds: Annotated[int, typer.Option(min=1)] = 1,
    k: Annotated[int, typer.Option(min=1, max=16)] = _D["k"],
    max_new_tokens: Annotated[int, typer.Option(min=8)] = _D["max_new_tokens"],
    prompt_format: Annotated[str, typer.Option(help="The generator's prompt_format.", **choice(PromptFormat))] = _D["prompt_format"],
    priority_exponent: Annotated[float, typer.Option(min=0.0, max=10.0, help="Exponent of Eq. 7.")] = _D["priority_exponent"],
    scheme: Annotated[str, typer.Option(help="PPER sampling scheme (Eq. 7).", **choice(Scheme))] = _D["scheme"],
    possibility: Annotated[str, typer.Option(help="Possibility P(t) of a program (Eq. 6).", **choice(Possibility))] = _D["possibility"],
    n: Annotated[int, typer.Option(min=1)] = _D["n"],
    steps: Annotated[int, typer.Option(min=1)] = _D["steps"],
    lr: Annotated[float, typer.Option()] = _D["learning_rate"],
    lora: Annotated[bool, typer.Option(help="LoRA instead of full fine-tuning.")] = _D["lora"],
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = _D["lora_r"],
    judge_time_s: Annotated[float, typer.Option(help="Judge wall time per case, seconds.")] = _D["judge_time_s"],
    judge_memory_mb: Annotated[int, typer.Option(help="Judge memory limit, MiB.")] = _D["judge_memory_mb"],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the PPER draws and training.")] = _D["seed"],
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout (progress on stderr).")] = False,
) -> None:
    """Alpha sweep (the paper's Figure 1): one run per alpha, final held-out scores against alpha."""
    from ..run.report import write_sweep_report
    from ..run.sweep import run_sweep

    settings = Settings()
    options = dict(locals())
    try:
        values = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError as exc:
        raise bad_option("--alphas", alphas, "should be comma-separated numbers from 0 to 1") from exc
    if not values or not all(0.0 <= a <= 1.0 for a in values):
        raise bad_option("--alphas", alphas, "should be comma-separated numbers from 0 to 1")
    if model is not None and not settings.generator_url:
        check_model(model, settings)
    try:
        base = run_config(options, settings, name=name or time.strftime("sweep-%Y%m%d-%H%M%S"))
    except pydantic.ValidationError as exc:
        raise config_error(exc) from exc
    out = Console(stderr=True) if json_output else console
    start = time.perf_counter()
    try:
        results = run_sweep(
            base, values, settings,
            lambda cfg, resume: execute(None if resume else cfg, cfg.name if resume else None, settings, out=out),
        )
    except StartupError as exc:
        exit_with(f"sweep cannot start: {exc}", exc)
    except BTPError as exc:
        raise _fail(f"{type(exc).__name__}: {exc.message}") from exc
    path = write_sweep_report(results, settings.runs_dir() / base.name)
    if json_output:
        print(json.dumps({"sweep": base.name, "seconds": round(time.perf_counter() - start, 1), "report": str(path),
                          "alphas": results}))
        return
    for r in results:
        console.print(f"alpha {r['alpha']:<5} pass rate {r['pass_rate']:.4f} accuracy {r['accuracy']:.4f}")
    console.print(f"sweep report: {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
