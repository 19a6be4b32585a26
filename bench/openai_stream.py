"""Streaming benchmark: how soon the first token of ``stream: true`` reaches an ``openai`` client, against the
whole answer's time (what streaming gave before tokens were streamed as decoded), in the same run.

    .venv/bin/python bench/openai_stream.py [--model SmolLM2-135M-Instruct] [--max-tokens 64] [--reps 5]

The generator runs as a real uvicorn server in this process (a thread) on CPU; the client is the official
``openai`` package over HTTP. Per repetition, greedy decoding of the same prompt: a non-streamed request
(total seconds) and a streamed one (seconds to the first chunk with text, and to the last). Prints medians,
spreads (min-max) and the ratio first-chunk / whole answer; both answers must be equal (checked).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import openai
    import uvicorn

    from services.generator.app import create_app
    from services.generator.settings import Settings
    from services.pipeline.cli.stack import free_port

    port = free_port()
    app = create_app(Settings(model=args.model, device="cpu"))  # BTP_DATA_DIR: the converted model is kept
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the generator did not start")
        time.sleep(0.5)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    name = client.models.list().data[0].id
    prompt = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    knobs = {"model": name, "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0}
    client.completions.create(**knobs)  # warm-up
    whole, first, last = [], [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        full = client.completions.create(**knobs).choices[0].text
        whole.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        text, got = "", None
        for chunk in client.completions.create(**knobs, stream=True):
            if chunk.choices and chunk.choices[0].text:
                got = got if got is not None else time.perf_counter() - t0
                text += chunk.choices[0].text
        last.append(time.perf_counter() - t0)
        first.append(got if got is not None else last[-1])
        assert text == full, (text, full)
    server.should_exit = True

    def row(label: str, xs: list[float]) -> str:
        return f"{label:<38} median {statistics.median(xs):7.3f} s   min {min(xs):7.3f}   max {max(xs):7.3f}"

    print(f"{name} on CPU, greedy, {args.max_tokens} new tokens at most, {args.reps} repetitions")
    print(row("whole answer (non-streamed; baseline)", whole))
    print(row("streamed: first chunk with text", first))
    print(row("streamed: last chunk", last))
    print(f"first chunk / whole answer: {statistics.median(first) / statistics.median(whole):.3f} (median ratio)")


if __name__ == "__main__":
    main()
