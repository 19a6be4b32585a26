"""`btp experiment` (and ``python -m services.pipeline.experiments.command``): config in, results out.

Progress: a bar per phase on a terminal, else a line per phase with counts and rates (logs); ``--json``
prints the summary (as ``results.json``) on stdout and the progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..run.folder import write_json
from ..run.progress import console_reporter
from ..settings import Settings
from .experiment import Experiment
from .recipes import ExperimentConfig
from .stats import markdown_table, plot_alpha, plot_rounds, plot_variants


def load_config(path: Path) -> ExperimentConfig:
    """An experiment config from a JSON file."""
    return ExperimentConfig.model_validate_json(path.read_text(encoding="utf-8"))


def experiment_command(
    config: Annotated[
        Path | None, typer.Option(help="JSON config (a saved config.json repeats its run).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name (overrides the config's).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder (default BTP_DATA_DIR/experiments/<name>).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Student model (overrides the config's).")] = None,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated variant names to run (default all).")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds of the config to run (default all).")
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(
            help="Run the shared phases (beam buffer, base evaluation); --no-shared for a 2nd process."
        ),
    ] = True,
    summarize_only: Annotated[
        bool, typer.Option(help="Only rebuild results.json/results.md from finished phases.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout (progress on stderr).")
    ] = False,
) -> None:
    """The paper's experiments at small scale: ablations, alpha sweep, teacher -> student, with CIs."""
    from services.common.errors import BTPError

    settings = Settings()
    try:
        cfg = (
            load_config(config)
            if config
            else ExperimentConfig(name=name or time.strftime("exp-%Y%m%d-%H%M%S"))
        )
        updates = {k: v for k, v in (("name", name), ("model", model)) if v}
        cfg = ExperimentConfig.model_validate(cfg.model_dump() | updates)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: bad config: {exc}", err=True)
        raise typer.Exit(2) from exc
    folder = out or settings.data_dir / "experiments" / cfg.name
    saved = folder / "config.json"
    if saved.exists() and load_config(saved) != cfg:
        typer.echo(f"error: {folder} holds an experiment with another config; choose another --out", err=True)
        raise typer.Exit(2)
    try:
        only_seeds = [int(s) for s in (seeds or "").split(",") if s.strip()] or None
    except ValueError as exc:
        typer.echo(f"error: --seeds takes comma-separated integers: {seeds}", err=True)
        raise typer.Exit(2) from exc
    if only_seeds and not set(only_seeds) <= set(cfg.seeds):
        typer.echo(f"error: --seeds {seeds}: the config's seeds are {cfg.seeds}", err=True)
        raise typer.Exit(2)
    out_console = Console(stderr=True) if json_output else Console()
    with console_reporter(out_console) as reporter:
        exp = Experiment(cfg, folder, settings, log=lambda m: reporter.log(f"{time.strftime('%H:%M:%S')} {m}"),
                         reporter=reporter)
        try:
            summary = (
                exp.summarize()
                if summarize_only
                else exp.run([s for s in (only or "").split(",") if s] or None, shared=shared, seeds=only_seeds)
            )
        except BTPError as exc:
            typer.echo(f"error: {type(exc).__name__}: {exc.message}", err=True)
            raise typer.Exit(1) from exc
    if summarize_only and summary.get("base"):
        write_json(folder / "results.json", summary)
        (folder / "results.md").write_text(markdown_table(summary), encoding="utf-8")
        plot_variants(summary, folder / "variants.png")
        plot_alpha(summary, folder / "alpha.png")
        plot_rounds(summary, folder / "rounds.png")
    if json_output:
        print(json.dumps({"experiment": cfg.name, "folder": str(folder), **summary}, default=str))
        return
    if summary.get("base"):
        typer.echo(markdown_table(summary))
    typer.echo(f"results in {folder}")


def main(argv: list[str] | None = None) -> None:
    """``python -m services.pipeline.experiments.command ...``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(experiment_command)
    app(args=argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
