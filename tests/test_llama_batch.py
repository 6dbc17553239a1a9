"""Continuous batching in the llama.cpp backend (``num_parallel`` > 1), on the tiny GGUF:
many sequences per decode step, each with its own options; joins, leaves, cancellation and
preemption between steps; nothing truncated."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.backends.llama_batch import Batcher

from .tinymodel import write_tiny_gguf

pytest.importorskip("llama_cpp", reason="the llama extra is not installed")

PROMPTS = ["the cat", "a word of", "one and two", "when she"]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[ff.AsyncEngine]:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    e = ff.AsyncEngine(ff.Settings(home=tmp_path / "home", num_parallel=4, threads=1))
    await e.pull(str(gguf), name="tiny")
    yield e
    await e.close()


def batcher(engine: ff.AsyncEngine) -> Batcher:
    found = engine.scheduler.runners["tiny:latest"].mold._batcher  # type: ignore[attr-defined]
    assert isinstance(found, Batcher)
    return found


async def run_all(engine: ff.AsyncEngine, requests: list[dict[str, Any]]) -> list[ff.Result]:
    return list(
        await asyncio.gather(
            *(engine.generate("tiny", r["prompt"], raw=True, **r["kw"]) for r in requests)
        )
    )


async def test_concurrent_requests_with_their_own_options_all_finish_right(
    engine: ff.AsyncEngine,
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    requests = [
        {"prompt": "the cat", "kw": {"options": {"temperature": 0, "max_tokens": 12}}},
        {"prompt": "a word", "kw": {"options": {"temperature": 0.9, "seed": 7, "max_tokens": 20}}},
        {"prompt": "one", "kw": {"options": {"temperature": 0, "max_tokens": 30, "stop": ["e"]}}},
        {"prompt": "{", "kw": {"format": schema, "options": {"temperature": 0, "max_tokens": 40}}},
        {"prompt": "when", "kw": {"options": {"temperature": 0.7, "seed": 3, "max_tokens": 8}}},
        {"prompt": "he was", "kw": {"options": {"temperature": 0, "max_tokens": 16}}},
    ]
    first = await run_all(engine, requests)
    assert [r.stats.eval_count for r in first][:2] == [12, 20]
    assert first[0].done_reason == first[1].done_reason == "length"
    assert "e" not in first[2].text and first[2].done_reason == "stop"
    assert isinstance(json.loads(first[3].text)["a"], int)
    assert first[4].stats.eval_count == 8 and first[5].stats.eval_count == 16
    again = await run_all(engine, requests)  # the same schedule, the same answers
    assert [r.text for r in again] == [r.text for r in first]


async def test_decode_steps_carry_several_sequences(engine: ff.AsyncEngine) -> None:
    greedy = {"options": {"temperature": 0, "max_tokens": 32}}
    await run_all(engine, [{"prompt": p, "kw": greedy} for p in PROMPTS])
    b = batcher(engine)
    assert b.busy_steps and b.busy_carried / b.busy_steps >= 2  # while 4 requests ran
    assert b.widths[4] >= 16  # all four slots, step after step


async def test_a_greedy_answer_alone_equals_the_batched_one(engine: ff.AsyncEngine) -> None:
    greedy = {"options": {"temperature": 0, "max_tokens": 24}}
    alone = [
        (await engine.generate("tiny", p, raw=True, **greedy)).text for p in PROMPTS
    ]  # fmt: skip
    together = await run_all(engine, [{"prompt": p, "kw": greedy} for p in PROMPTS])
    assert [r.text for r in together] == alone


async def test_a_client_that_leaves_frees_its_sequence_while_others_stream(
    engine: ff.AsyncEngine,
) -> None:
    long = {"temperature": 0, "max_tokens": 300}
    others = asyncio.gather(
        *(engine.generate("tiny", p, raw=True, options=long) for p in PROMPTS[:2])
    )
    stream = engine.generate_stream("tiny", "the cat", raw=True, options=long)
    async for chunk in stream:
        if chunk.text:
            break
    await stream.aclose()
    b = batcher(engine)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(b._running) == 2:
            break
    assert len(b._running) == 2  # it left; the other two go on
    done = await others
    assert [r.stats.eval_count for r in done] == [300, 300]


async def test_a_reader_that_stops_reading_is_cut_and_nobody_waits_for_it(
    engine: ff.AsyncEngine,
) -> None:
    await engine.generate("tiny", "a", raw=True, options={"max_tokens": 1})
    b = batcher(engine)
    b.max_unread, b.stall_after = 16, 0.01
    long = {"temperature": 0, "max_tokens": 400}
    stuck = engine.generate_stream("tiny", "the cat", raw=True, options=long)
    async for chunk in stuck:
        if chunk.text:
            break  # read one, then nothing for a while
    other = await engine.generate("tiny", "a word", raw=True, options=long)
    assert other.stats.eval_count == 400  # the decode steps never waited for the stuck one
    rest = [c async for c in stuck]
    assert rest[-1].done_reason == "cancel"
    assert len(rest) - 1 < 400 - 16  # what it buffered is bounded, not the whole answer
    assert not b._running


async def test_a_full_cache_preempts_and_truncates_nobody(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", context_length=256)
    settings = ff.Settings(home=tmp_path / "home", num_parallel=4, num_ctx=256, threads=1)
    e = ff.AsyncEngine(settings)
    await e.pull(str(gguf), name="tiny")
    try:
        # four answers of 120 tokens cannot all be in 256 cells at once
        unlimited = {"temperature": 0, "max_tokens": 120}
        results = await asyncio.gather(
            *(e.generate("tiny", p, raw=True, options=unlimited) for p in PROMPTS)
        )
        assert [r.stats.eval_count for r in results] == [120] * 4
        assert all(r.done_reason == "length" for r in results)
        assert batcher(e).preempted > 0
        alone = await e.generate("tiny", PROMPTS[0], raw=True, options=unlimited)
        assert alone.text == results[0].text  # a preempted answer goes on where it was
        unit = len(await e.tokenize("tiny", "the cat "))
        long = "the cat " * (240 // unit)  # about 240 of the 256 cells
        whole = await e.generate("tiny", long, raw=True, options={"max_tokens": 8})
        assert whole.stats.prompt_eval_count > 200 and whole.stats.eval_count == 8
    finally:
        await e.close()


async def test_tokens_are_answered_while_streams_run(engine: ff.AsyncEngine) -> None:
    long = {"temperature": 0, "max_tokens": 200}
    running = asyncio.gather(  # three: the fourth slot is the tokenize's
        *(engine.generate("tiny", p, raw=True, options=long) for p in PROMPTS[:3])
    )
    await asyncio.sleep(0.05)
    ids = await asyncio.wait_for(engine.tokenize("tiny", "the cat"), 5)
    assert await engine.detokenize("tiny", ids) == "the cat"
    assert not running.done()  # answered between decode steps, not after them all
    await running


async def test_a_chats_next_turn_evaluates_only_its_new_tokens(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    greedy = {"temperature": 0, "max_tokens": 16}
    first = [{"role": "user", "content": "the cat"}]

    async def turns(e: ff.AsyncEngine, cached: bool) -> tuple[ff.Result, ff.Result]:
        reply = await e.chat("tiny", first, options=greedy)  # its tokens stay in the cache
        if not cached:
            await e.unload("tiny")  # nothing cached for the next turn
        second = [*first, {"role": "assistant", "content": reply.text}]
        follow = [*second, {"role": "user", "content": "and a"}]
        return reply, await e.chat("tiny", follow, options=greedy)

    answers = []
    for cached in (True, False):
        e = ff.AsyncEngine(ff.Settings(home=tmp_path / f"home{cached}", num_parallel=4, threads=1))
        await e.pull(str(gguf), name="tiny")
        try:
            answers.append(await turns(e, cached))
        finally:
            await e.close()
    (reply, warm), (_, cold) = answers
    first_turn = reply.stats.prompt_eval_count
    assert reply.stats.prompt_cached == 0 and cold.stats.prompt_cached == 0
    total = cold.stats.prompt_eval_count
    assert warm.stats.prompt_eval_count + warm.stats.prompt_cached == total
    # the first turn's prompt was not evaluated again (the tiny model's answer tokens are not
    # what its text tokenizes back to, so the cached prefix ends where the answer starts)
    assert warm.stats.prompt_cached >= first_turn
    assert warm.text == cold.text


async def test_parallel_is_a_per_model_setting_and_a_load_option(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    settings = ff.Settings(home=tmp_path / "home", model_parallel={"tiny": 3}, threads=1)
    e = ff.AsyncEngine(settings)  # num_parallel unset: llama.cpp's default of 4
    for name in ("tiny", "other", "single"):
        await e.pull(str(gguf), name=name)
    try:
        await e.generate("tiny", "a", raw=True, options={"max_tokens": 1})
        await e.generate("other", "a", raw=True, options={"max_tokens": 1})
        await e.load("single", parallel=1)
        runners = e.scheduler.runners
        assert runners["tiny:latest"].slots.capacity == 3
        assert "batch" in runners["tiny:latest"].mold.tasks
        assert runners["other:latest"].slots.capacity == 4
        assert runners["single:latest"].slots.capacity == 1  # one at a time, no batcher
        assert "batch" not in runners["single:latest"].mold.tasks
        await e.load("other", parallel=2)  # asked at load: reloaded with two slots
        assert runners["other:latest"].slots.capacity == 2
        assert {r.name: r.slots for r in await e.ps()}["other:latest"] == 2
    finally:
        await e.close()


@pytest.mark.slow
async def test_eight_concurrent_requests_on_smollm2_match_lone_runs_up_to_a_near_tie() -> None:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/smollm2/135m.json").is_file():
        pytest.skip("smollm2:135m is not in the test home; ./dev.sh test pulls it first")
    e = ff.AsyncEngine(ff.Settings(home=home, num_parallel=8, num_ctx=2048))
    greedy = {"temperature": 0, "max_tokens": 32, "repetition_penalty": 1.0}
    most = {"max_tokens": 48}
    prompts = [f"Count from {i} to {i + 5}:" for i in range(5)]
    others: list[
        dict[str, Any]
    ] = [  # other options in the same batches: seeded sampling, a stop, JSON
        {"prompt": "Once upon a time", "kw": {"options": {"temperature": 0.8, "seed": 7, **most}}},
        {"prompt": "List three colors:", "kw": {"options": {"stop": ["\n\n"], "seed": 1, **most}}},
        {"prompt": "A person as JSON:", "kw": {"format": "json", "options": {"seed": 2}}},
    ]
    try:
        await e.generate("smollm2:135m", "hi", raw=True, options={"max_tokens": 1})
        b = batcher_of(e, "smollm2:135m")
        b.gaps = {}
        lone = {p: await e.generate("smollm2:135m", p, raw=True, options=greedy) for p in prompts}
        gaps = dict(b.gaps)
        requests: list[dict[str, Any]] = [
            {"prompt": p, "kw": {"options": greedy}} for p in prompts
        ] + others
        runs = []
        for _ in range(2):
            # The same schedule: no cached prompt, and every request queued before the
            # first step (the worker is held until they all wait), so all start together.
            gate = threading.Event()

            def hold(gate: threading.Event = gate) -> None:
                b.clear_cache()
                gate.wait()

            b._worker.post(hold)
            pending = [
                asyncio.create_task(e.generate("smollm2:135m", r["prompt"], raw=True, **r["kw"]))
                for r in requests
            ]
            while len(b._waiting) < len(requests):
                await asyncio.sleep(0.01)
            gate.set()
            results = await asyncio.gather(*pending)
            runs.append([r.text for r in results])
            for p, r in zip(prompts, results, strict=False):
                alone = lone[p]
                start = alone.stats.prompt_eval_count + alone.stats.prompt_cached
                want, got = alone.context[start:], r.context[start:]  # type: ignore[index]
                prompt = tuple(alone.context[:start])  # type: ignore[index]
                near = next((i for i, g in enumerate(gaps[prompt]) if g < 0.5), len(want))
                assert got[:near] == want[:near], p  # equal up to the first near-tie
            assert json.loads(results[-1].text) is not None
            assert "\n\n" not in results[-2].text
        assert runs[0] == runs[1]  # the same schedule gives the same outputs
        assert b.busy_steps and b.busy_carried / b.busy_steps >= 2
        assert max(b.widths) == len(requests)  # one decode step carried all eight
    finally:
        await e.close()


def batcher_of(engine: ff.AsyncEngine, key: str) -> Batcher:
    found = engine.scheduler.runners[key].mold._batcher  # type: ignore[attr-defined]
    assert isinstance(found, Batcher)
    return found
