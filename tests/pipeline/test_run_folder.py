"""Run folder, config, metrics and report: pure parts, no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.prompts import RAW_STOP
from services.pipeline.run.config import RunConfig, TeacherConfig
from services.pipeline.run.folder import RunFolder
from services.pipeline.run.metrics import TaskOutcome, histogram, summarize
from services.pipeline.run.report import table_rows, write_report, write_sweep_report


def _cfg(**kw: object) -> RunConfig:
    return RunConfig.model_validate({"name": "t1", "model": "m", **kw})


def test_config_defaults_and_validation() -> None:
    cfg = _cfg()
    assert cfg.k == 3 and cfg.datasets == ["mbpp"] and cfg.prompt_format == "chat" and cfg.stops() == []
    assert _cfg(prompt_format="raw").stops() == list(RAW_STOP)


def test_one_raw_stop_list_for_runs_and_the_generator() -> None:
    """The bug: a run's raw stops differed from the generator's default; both are common.prompts.RAW_STOP."""
    from services.generator.settings import Settings as GeneratorSettings

    assert _cfg(prompt_format="raw").stops() == GeneratorSettings().raw_stop == list(RAW_STOP)
    with pytest.raises(ValidationError):
        _cfg(datasets=["nope"])
    with pytest.raises(ValidationError):
        _cfg(alpha=1.5)
    for bad in ("../escape", "..", ".hidden", "a b"):
        with pytest.raises(ValidationError):
            _cfg(name=bad)
    with pytest.raises(ValidationError):
        TeacherConfig(kind="openai", url="http://x")
    with pytest.raises(ValidationError):
        _cfg(unknown_knob=1)


def test_metrics_summary_per_difficulty() -> None:
    outcomes = [
        TaskOutcome("a", "apps", "interview", 1.0, True),
        TaskOutcome("b", "apps", "interview", 0.5, False),
        TaskOutcome("c", "apps", "competition", 0.0, False),
        TaskOutcome("d", "mbpp", None, 1 / 3, False),
    ]
    s = summarize(outcomes)
    assert s["tasks"] == 4
    assert s["pass_rate"] == pytest.approx((1 + 0.5 + 0 + 1 / 3) / 4)
    assert s["accuracy"] == pytest.approx(0.25)
    assert s["by_difficulty"]["interview"] == {"tasks": 2, "pass_rate": 0.75, "accuracy": 0.5}
    assert set(s["by_dataset"]) == {"apps", "mbpp"}
    assert summarize([])["pass_rate"] == 0.0


def test_histogram_edges_and_closed_last_bin() -> None:
    h = histogram([0.0, 0.05, 0.5, 1.0, 1.0], bins=10)
    assert h["counts"][0] == 2 and h["counts"][5] == 1 and h["counts"][9] == 2
    assert len(h["edges"]) == 11 and sum(h["counts"]) == 5


def test_run_folder_state_and_resume_marks(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, _cfg())
    with pytest.raises(FileExistsError):
        RunFolder.create(tmp_path, _cfg())
    assert not folder.is_done("eval:0")
    folder.mark("eval:0")
    folder.mark("train:1", checkpoint="/ckpt/1")
    again = RunFolder.open(tmp_path, "t1")
    assert again.state().done == ["eval:0", "train:1"] and again.state().checkpoint == "/ckpt/1"
    assert again.config().name == "t1"
    folder.save_metrics(1, {"a": 1})
    folder.save_metrics(1, {"b": 2})
    folder.save_metrics(0, {"c": 3})
    assert folder.metrics() == [{"round": 0, "c": 3}, {"round": 1, "a": 1, "b": 2}]
    with pytest.raises(FileNotFoundError):
        RunFolder.open(tmp_path, "missing")


def _eval(pr: float, acc: float) -> dict[str, object]:
    return {"tasks": 4, "pass_rate": pr, "accuracy": acc, "by_dataset": {"apps": {"tasks": 4, "pass_rate": pr, "accuracy": acc}},
            "by_difficulty": {"interview": {"tasks": 4, "pass_rate": pr, "accuracy": acc}}}


def test_report_writes_html_and_pngs(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, _cfg())
    hist = histogram([0.1, 0.2, 0.9])
    folder.save_metrics(0, {"eval": _eval(0.1, 0.0), "eval_seconds": 3})
    folder.save_metrics(1, {
        "eval": _eval(0.3, 0.25), "eval_seconds": 2, "sample_seconds": 5,
        "train": {"checkpoint": "x", "loss_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]},
        "replay": {"sampled": {"pass_rate": hist, "p2value": hist}, "stored": {"pass_rate": hist, "count": 3}, "population": 3},
        "buffer": {"alpha": 0.5, "datasets": {"apps": {"p2value_histogram": hist, "pass_rate_histogram": hist}}},
    })  # fmt: skip
    path = write_report(folder)
    page = path.read_text()
    for png in ("rounds.png", "loss.png", "buffer.png", "sampled_vs_stored.png"):
        assert (path.parent / png).stat().st_size > 1000 and png in page
    assert "0.3000" in page and "interview" in page
    rows = table_rows(folder.metrics())
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["seconds"] == 7


def test_sweep_report(tmp_path: Path) -> None:
    results = [{"alpha": a, "run": f"s-alpha{a}", "baseline_pass_rate": 0.1, "pass_rate": 0.1 + a / 10, "accuracy": a / 10}
               for a in (0.0, 0.5, 1.0)]  # fmt: skip
    path = write_sweep_report(results, tmp_path / "sweep")
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000 and "s-alpha0.5" in path.read_text()


def test_sample_request_is_scoped_to_the_runs_datasets() -> None:
    """The bug: with two data sets the run sampled with no data set filter (every program of the buffer)."""
    from services.pipeline.run.loop import Pipeline

    cfg = _cfg(datasets=["mbpp", "humaneval"], alpha=0.25, priority_exponent=2.0, scheme="proportional")
    pipe = Pipeline(cfg, None, None, tasks=([], []))  # type: ignore[arg-type]
    req = pipe.sample_request(1)
    assert req.datasets == ["mbpp", "humaneval"] and req.split == "train"
    assert req.replay_rule() == cfg.replay_rule()
    assert (req.alpha, req.priority_exponent, req.scheme) == (0.25, 2.0, "proportional")
