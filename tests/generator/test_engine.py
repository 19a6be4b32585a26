"""The engine without HTTP: bounded queue (429), dynamic batching, and swaps while requests are in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import OverloadedError
from services.common.schemas.generator import GenerateRequest
from services.generator.engine import Engine

from .conftest import tiny_settings


def req(prompt: str, **kw: Any) -> GenerateRequest:
    return GenerateRequest(prompts=[prompt], max_new_tokens=kw.pop("max_new_tokens", 6), prompt_format="raw", **kw)


def block_worker(engine: Engine) -> Callable[[], None]:
    """Hold the model (as a running batch would) until the returned function is called."""
    engine._run_lock.acquire()
    return engine._run_lock.release


def test_full_queue_is_overloaded(tiny_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        engine = Engine(tiny_settings(tiny_dir, tmp_path, max_queue=2))
        await engine.start()
        try:
            release = block_worker(engine)
            first = asyncio.create_task(engine.generate(req("a")))
            second = asyncio.create_task(engine.generate(req("b")))
            await asyncio.sleep(0.05)
            with pytest.raises(OverloadedError):
                await engine.generate(req("c"))
            release()
            done = await asyncio.gather(first, second)
            assert all(len(r.results[0].candidates) == 3 for r in done)
            await engine.generate(req("c"))  # room again
        finally:
            await engine.stop()

    asyncio.run(main())


def test_requests_that_arrive_together_share_a_batch(tiny_dir: Path, tmp_path: Path) -> None:
    prompts = ["def f(x):", "hello", "import os", "class A:", "x = 1"]

    async def main() -> None:
        engine = Engine(tiny_settings(tiny_dir, tmp_path, max_batch_prompts=8))
        await engine.start()
        try:
            alone = [await engine.generate(req(p)) for p in prompts]
            batches_before = engine.stats["batches"]
            release = block_worker(engine)
            tasks = [asyncio.create_task(engine.generate(req(p))) for p in prompts]
            other = asyncio.create_task(engine.generate(req("y", max_new_tokens=3)))  # decodes differently
            await asyncio.sleep(0.05)
            release()
            together = await asyncio.gather(*tasks)
            await other
            assert engine.stats["batches"] - batches_before == 2
            for a, b in zip(alone, together, strict=True):
                ca, cb = a.results[0].candidates, b.results[0].candidates
                assert [c.token_ids for c in ca] == [c.token_ids for c in cb]
                assert [c.logprob for c in ca] == pytest.approx([c.logprob for c in cb], abs=1e-4)
        finally:
            await engine.stop()

    asyncio.run(main())


def test_in_flight_requests_finish_on_old_weights(tiny_dir: Path, tiny_dir_b: Path, tmp_path: Path) -> None:
    async def main() -> None:
        engine = Engine(tiny_settings(tiny_dir, tmp_path))
        await engine.start()
        try:
            old = await engine.generate(req("def f(x):"))
            release = block_worker(engine)
            in_flight = asyncio.create_task(engine.generate(req("def f(x):")))
            await asyncio.sleep(0.05)
            swapped = await engine.swap_weights(str(tiny_dir_b))  # completes while the request waits
            assert swapped.checkpoint == str(tiny_dir_b) and swapped.previous == str(tiny_dir)
            later = asyncio.create_task(engine.generate(req("def f(x):")))
            release()
            first, second = await asyncio.gather(in_flight, later)
            assert first.checkpoint == str(tiny_dir) and first.results == old.results
            assert second.checkpoint == str(tiny_dir_b) and second.results != old.results
        finally:
            await engine.stop()

    asyncio.run(main())
