"""`btp experiment` machinery on a tiny random Llama: phases, resume, result structure, saved config.

The services are the real ones in-process (generator, bubblewrap judge, SQLite buffer, run_job); only the
model is tiny, so its programs fail and the rejection-sampling variant has nothing to train on, while
the teacher's reference programs (HumanEval canonical solutions) pass and do train.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.pipeline.experiments.command import main
from services.pipeline.experiments.experiment import Experiment
from services.pipeline.experiments.recipes import ExperimentConfig, Variant, keeps
from services.pipeline.experiments.stats import bootstrap_ci, summarize_variant
from services.pipeline.settings import Settings

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "def f(xs):\n    return [x * 2 for x in xs if x > 0]\n",
    '    """Return the list."""\n',
] * 30


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a 300-token byte-level BPE tokenizer, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CODE,
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>", "<|pad|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tiny_config(model: Path, **extra: object) -> ExperimentConfig:
    data = {
        "name": "tiny",
        "model": str(model),
        "train_size": 2,
        "test_size": 2,
        "teacher_size": 2,
        "k": 2,
        "max_new_tokens": 12,
        "gen_batch": 4,
        "n": 2,
        "steps": 1,
        "max_seq_len": 128,
        "device": "cpu",
        "bootstrap_draws": 200,
        "judge_time_s": 2.0,
        "variants": [
            {"name": "p2value-rank", "alpha_sweep": True},
            {"name": "alpha-0", "alpha": 0.0, "alpha_sweep": True},
            {"name": "rejection", "buffer": "passing", "scheme": "uniform"},
            {"name": "teacher-rank", "buffer": "teacher"},
        ],
        **extra,
    }
    return ExperimentConfig.model_validate(data)


def test_experiment_runs_resumes_and_saves_its_config(tiny_model: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_model)
    settings = Settings(data_dir=tmp_path / "data")
    out = tmp_path / "exp"
    logs: list[str] = []
    summary = Experiment(cfg, out, settings, log=logs.append).run()

    assert ExperimentConfig.model_validate_json((out / "config.json").read_text()) == cfg
    for phase in (
        "sample-beam",
        "teacher",
        "passing",
        "eval-base",
        "variant-p2value-rank-s0",
        "variant-alpha-0-s0",
        "variant-teacher-rank-s0",
        "variant-rejection-s0",
    ):
        assert (out / "phases" / f"{phase}.json").is_file(), phase
    beam = json.loads((out / "phases" / "sample-beam.json").read_text())
    assert beam["stored"] >= 2 and beam["judged"] == beam["stored"]
    teacher = json.loads((out / "phases" / "teacher.json").read_text())
    assert teacher["stored"] == 2 and teacher["stats"]["datasets"]["humaneval"]["mean_pass_rate"] == 1.0
    base = summary["base"]
    assert set(base) >= {"pass_rate", "accuracy"} and 0.0 <= base["pass_rate"]["mean"] <= 1.0
    assert set(summary["variants"]) >= {"p2value-rank", "alpha-0", "teacher-rank"}
    for v in summary["variants"].values():
        lo, hi = v["pass_rate"]["ci"]
        assert lo <= v["pass_rate"]["mean"] <= hi
        assert v["seeds"] == 1 and v["final_loss"] and all(x == x for x in v["final_loss"])
    assert summary["variants"]["teacher-rank"]["replay"][0]["mean_pass_rate_drawn"] == 1.0
    if "rejection" not in summary["variants"]:  # a random model's programs never pass every test
        assert "rejection" in summary["skipped"]
    assert summary["not_finished"] == []
    assert not (out / "checkpoints" / "p2value-rank-s0").exists()
    md = (out / "results.md").read_text()
    assert "| base |" in md and "| teacher-rank |" in md
    assert (out / "variants.png").stat().st_size > 0 and (out / "alpha.png").stat().st_size > 0

    # resume: every phase is done, nothing is recomputed, the summary is the same
    before = {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()}
    again = Experiment(cfg, out, settings, log=logs.append).run()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()} == before
    assert again["variants"] == summary["variants"]


def test_cli_refuses_bad_and_conflicting_configs(tiny_model: Path, tmp_path: Path) -> None:
    import typer

    from services.pipeline.experiments.command import experiment_command

    app = typer.Typer()
    app.command()(experiment_command)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]}))
    result = CliRunner().invoke(app, ["--config", str(bad)])
    assert result.exit_code == 2 and "unique" in result.output
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.json").write_text(tiny_config(tiny_model).model_dump_json())
    other = tmp_path / "other.json"
    other.write_text(tiny_config(tiny_model, steps=2).model_dump_json())
    result = CliRunner().invoke(app, ["--config", str(other), "--out", str(out)])
    assert result.exit_code == 2 and "another config" in result.output
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(tiny_config(tiny_model).model_dump_json())
    for seeds, message in (("0,x", "comma-separated integers"), ("7", "the config's seeds are [0]")):
        result = CliRunner().invoke(app, ["--config", str(cfg_file), "--out", str(tmp_path / "s"), "--seeds", seeds])
        assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(tmp_path / "missing.json")])
    assert exc.value.code == 2


def test_bootstrap_and_paired_summary() -> None:
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0] * 20, draws=500)
    assert 0.3 < lo < 0.5 < hi < 0.7
    base = {"per_task": {f"t{i}": {"pass_rate": 0.0, "passed_all": False} for i in range(10)}}
    better = {
        "per_task": {f"t{i}": {"pass_rate": 1.0 if i < 5 else 0.0, "passed_all": i < 5} for i in range(10)}
    }
    s = summarize_variant([better, base], base, draws=300)
    assert s["seeds"] == 2 and s["pass_rate"]["mean"] == pytest.approx(0.25)
    assert s["pass_rate"]["delta"] == pytest.approx(0.25) and s["pass_rate"]["improved_tasks"] == 5
    assert s["accuracy"]["per_seed"] == [0.5, 0.0]


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        ExperimentConfig.model_validate({"name": "x", "bogus": 1})
    with pytest.raises(ValueError):
        Variant.model_validate({"name": "bad name!"})


def _programs(out: Path, name: str) -> list[tuple[str, str, float]]:
    import sqlite3

    with sqlite3.connect(out / f"buffer-{name}.sqlite3") as db:
        rows = db.execute("select task_id, program, logprob from experiences order by task_id, program").fetchall()
    return [(str(t), str(p), round(float(lp), 4)) for t, p, lp in rows]


def test_rounds_resample_into_each_variants_own_buffer_and_resume(tiny_model: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tiny_model,
        rounds=2,
        teacher_model=str(tiny_model),
        variants=[
            {"name": "p2value-rank"},
            {"name": "model-teacher", "buffer": "model-teacher"},
        ],
    )
    settings = Settings(data_dir=tmp_path / "data")
    out = tmp_path / "exp"
    summary = Experiment(cfg, out, settings, log=lambda m: None).run()

    r1 = json.loads((out / "phases" / "variant-p2value-rank-s0-r1.json").read_text())
    r2 = json.loads((out / "phases" / "variant-p2value-rank-s0-r2.json").read_text())
    beam = json.loads((out / "phases" / "sample-beam.json").read_text())
    # round 1's weights sampled the train tasks again; the programs were judged and kept in the variant's copy
    assert r1["resample"]["generated"] >= 2 and 0.0 <= r1["resample"]["mean_pass_rate"] <= 1.0
    assert r1["resample"]["buffer_size"] >= beam["stored"]
    assert "resample" not in r2  # nothing is sampled after the last round
    own = _programs(out, "own-p2value-rank-s0")
    assert set(_programs(out, "beam")) <= set(own)  # the copy holds the shared buffer, untouched
    assert len(_programs(out, "beam")) == beam["stored"]
    # the static model-teacher buffer is replayed each round, never re-sampled
    teacher = json.loads((out / "phases" / "model-teacher.json").read_text())
    assert teacher["judged"] == teacher["stored"] >= 2
    assert not (out / "buffer-own-model-teacher-s0.sqlite3").exists()
    t1 = json.loads((out / "phases" / "variant-model-teacher-s0-r1.json").read_text())
    assert "resample" not in t1
    for name in ("p2value-rank", "model-teacher"):
        curve = summary["variants"][name]["rounds"]
        assert [c["round"] for c in curve] == [1, 2]
        assert summary["variants"][name]["pass_rate"]["per_seed"] == [curve[-1]["pass_rate"]]
    assert not any((out / "checkpoints").iterdir())
    assert "round 2" in (out / "results.md").read_text()
    assert (out / "rounds.png").stat().st_size > 0

    before = {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()}
    again = Experiment(cfg, out, settings, log=lambda m: None).run()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()} == before
    assert again["variants"] == summary["variants"]

    # a run cut off after round 1 on another machine: round 1's checkpoint is gone, so round 1 is redone
    for name in ("variant-p2value-rank-s0-r2.json", "variant-p2value-rank-s0.json"):
        (out / "phases" / name).unlink()
    Experiment(cfg, out, settings, log=lambda m: None).run()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()}
    assert after["variant-p2value-rank-s0-r1.json"] != before["variant-p2value-rank-s0-r1.json"]
    assert after["variant-model-teacher-s0-r1.json"] == before["variant-model-teacher-s0-r1.json"]
    assert (out / "phases" / "variant-p2value-rank-s0.json").is_file()
    assert not any((out / "checkpoints").iterdir())


def test_sampled_buffer_comes_from_the_base_weights_after_other_variants_trained(
    tiny_model: Path, tmp_path: Path
) -> None:
    variants = [{"name": "p2value-rank"}, {"name": "sampling-rank", "buffer": "sample"}]
    settings = Settings(data_dir=tmp_path / "data")
    after = tiny_config(tiny_model, learning_rate=0.05, steps=2, variants=variants)
    Experiment(after, tmp_path / "after", settings, log=lambda m: None).run()
    alone = tiny_config(tiny_model, learning_rate=0.05, steps=2, variants=variants[1:])
    Experiment(alone, tmp_path / "alone", settings, log=lambda m: None).run()
    assert _programs(tmp_path / "after", "sample") == _programs(tmp_path / "alone", "sample")


def test_config_rejects_model_teacher_without_a_teacher_and_rounds_with_lora(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="teacher_model"):
        tiny_config(tiny_model, variants=[{"name": "t", "buffer": "model-teacher"}])
    with pytest.raises(ValueError, match="lora"):
        tiny_config(tiny_model, rounds=2, lora=True)


def test_buffer_filters() -> None:
    assert keeps("passing", 1.0) and not keeps("passing", 0.5) and not keeps("passing", None)
    assert keeps("failed", 0.0) and keeps("failed", 0.9) and not keeps("failed", 1.0) and not keeps("failed", None)
    assert keeps("beam", None) and keeps("beam", 1.0)
    with pytest.raises(ValueError, match="dataset_path"):
        ExperimentConfig.model_validate({"name": "x", "dataset": "codeio"})
    with pytest.raises(ValueError, match="codeio only"):
        ExperimentConfig.model_validate({"name": "x", "judge_environment": "scientific"})


def _pass_rates(out: Path, name: str) -> list[float | None]:
    import sqlite3

    with sqlite3.connect(out / f"buffer-{name}.sqlite3") as db:
        return [r[0] for r in db.execute("select pass_rate from experiences").fetchall()]


def test_failed_only_recipe_and_a_seed_split(tiny_model: Path, tmp_path: Path) -> None:
    """The failed-only buffer is the beam buffer less its fully passing programs, re-filtered each round; a
    process given ``seeds`` runs only those."""
    cfg = tiny_config(
        tiny_model,
        rounds=2,
        seeds=[0, 1],
        variants=[{"name": "failed-only", "buffer": "failed"}, {"name": "rejection", "buffer": "passing"}],
    )
    out = tmp_path / "exp"
    summary = Experiment(cfg, out, Settings(data_dir=tmp_path / "data"), log=lambda m: None).run(seeds=[1])
    phases = {p.stem for p in (out / "phases").iterdir()}
    assert {"sample-beam", "failed", "passing", "eval-base", "variant-failed-only-s1"} <= phases
    assert not any(p.endswith("-s0") or "-s0-" in p for p in phases)
    beam = _pass_rates(out, "beam")
    failed = json.loads((out / "phases" / "failed.json").read_text())
    assert failed["programs"] == sum(r is not None and r < 1.0 for r in beam) >= 1
    assert sorted(_pass_rates(out, "failed")) == sorted(r for r in beam if r is not None and r < 1.0)
    r1 = json.loads((out / "phases" / "variant-failed-only-s1-r1.json").read_text())
    own = _pass_rates(out, "own-failed-only-s1")
    assert all(r is not None and r < 1.0 for r in own)
    assert len(own) == failed["programs"] + r1["resample"]["added"]  # the copy, then round 2's programs
    assert r1["resample"]["added"] == r1["resample"]["generated"] - r1["resample"]["fully_passing"]
    assert summary["variants"]["failed-only"]["seeds"] == 1
    assert set(summary["not_finished"]) >= {"failed-only-s0", "rejection-s0"}


def test_codeio_tasks_are_imported_once_and_read_back(tmp_path: Path) -> None:
    """A codeio experiment imports its slice through the judge's sandbox into ``<out>/tasks.json``; a second
    process (or a resume) reads that file and never needs the source again."""
    source = Path(__file__).parent / "data" / "codeio" / "sample.jsonl"
    cfg = ExperimentConfig.model_validate(
        {"name": "cio", "dataset": "codeio", "dataset_path": str(source), "train_size": 3, "test_size": 3, "test_fraction": 0.3,
         "import_workers": 2, "variants": [{"name": "p2value-rank"}]}
    )  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data")
    out = tmp_path / "exp"
    first = Experiment(cfg, out, settings, log=lambda m: None)
    cached = json.loads((out / "tasks.json").read_text())
    assert first.train_tasks and first.test_tasks
    assert {t["id"] for t in cached} >= {t.id for t in first.train_tasks + first.test_tasks}
    assert all(t.tests.kind == "call" and t.tests.fn_name == "main_solution" for t in first.train_tasks)
    assert {t.split for t in first.train_tasks} == {"train"} and {t.split for t in first.test_tasks} == {"test"}
    moved = cfg.model_copy(update={"dataset_path": str(tmp_path / "gone.jsonl")})
    again = Experiment(moved, out, settings, log=lambda m: None)
    assert [t.model_dump() for t in again.train_tasks] == [t.model_dump() for t in first.train_tasks]
    assert [t.model_dump() for t in again.test_tasks] == [t.model_dump() for t in first.test_tasks]


def test_transfer_evaluation_and_a_per_recipe_learning_rate(tiny_model: Path, tmp_path: Path) -> None:
    """`transfer: humaneval` evaluates the base model and each recipe's last round on HumanEval tasks it never
    trained on (summarised like the held-out split); a recipe's own learning rate is the one its jobs use."""
    cfg = tiny_config(
        tiny_model, rounds=2, transfer="humaneval", transfer_size=3,
        variants=[{"name": "p2value-rank"}, {"name": "lr-high", "learning_rate": 0.01}],
    )  # fmt: skip
    out = tmp_path / "exp"
    summary = Experiment(cfg, out, Settings(data_dir=tmp_path / "data"), log=lambda m: None).run()
    base = json.loads((out / "phases" / "eval-base-transfer.json").read_text())
    assert len(base["per_task"]) == 3 and all(t.startswith("HumanEval") for t in base["per_task"])
    assert not set(base["per_task"]) & {t for t in json.loads((out / "phases" / "eval-base.json").read_text())["per_task"]}
    for name in ("p2value-rank", "lr-high"):
        r1 = json.loads((out / "phases" / f"variant-{name}-s0-r1.json").read_text())
        r2 = json.loads((out / "phases" / f"variant-{name}-s0-r2.json").read_text())
        assert "transfer" not in r1 and set(r2["transfer"]["per_task"]) == set(base["per_task"])  # last round only
        entry = summary["variants"][name]
        assert entry["transfer"]["seeds"] == 1 and 0.0 <= entry["transfer"]["pass_rate"]["mean"] <= 1.0
    assert summary["base_transfer"]["pass_rate"]["mean"] == base["pass_rate"]
    lr = {name: json.loads((out / "phases" / f"variant-{name}-s0-r1.json").read_text())["loss_history"][0]["lr"]
          for name in ("p2value-rank", "lr-high")}  # fmt: skip
    assert lr["lr-high"] == pytest.approx(100 * lr["p2value-rank"])
    assert summary["variants"]["lr-high"]["learning_rate"] == 0.01
    assert summary["variants"]["p2value-rank"]["learning_rate"] == cfg.learning_rate
    md = (out / "results.md").read_text()
    assert "Transfer (humaneval" in md and "| lr-high |" in md.split("Transfer (humaneval")[1]
    # resumed: nothing is evaluated again
    before = {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()}
    Experiment(cfg, out, Settings(data_dir=tmp_path / "data"), log=lambda m: None).run()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "phases").iterdir()} == before


def test_transfer_and_learning_rate_are_checked() -> None:
    from pydantic import ValidationError

    for bad in ({"transfer": "apps"}, {"transfer_size": 0}, {"variants": [{"name": "x", "learning_rate": 0}]},
                {"variants": [{"name": "x", "learning_rate": 2.0}]}):  # fmt: skip
        with pytest.raises(ValidationError):
            ExperimentConfig.model_validate({"name": "x", **bad})
