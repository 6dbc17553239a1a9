"""The engine end to end on the null backend: store → scheduler → Mold, in-process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ferrousforge as ff
from ferrousforge.errors import (
    ConfigError,
    DeviceUnavailable,
    InsufficientMemory,
    InvalidModelFile,
    ModelNotFound,
    UnsupportedFormat,
)
from ferrousforge.runstate import read_all
from ferrousforge.store.manifest import Manifest

from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf


@pytest.fixture
def engine(tmp_path: Path) -> ff.AsyncEngine:
    settings = ff.Settings(home=tmp_path / "home", keep_alive=300)
    add_null_model(settings.home, "echo:1", {})
    add_null_model(settings.home, "fixed:1", {"reply": "one two three four five"})
    return ff.AsyncEngine(settings)


async def test_generate_and_stream(engine: ff.AsyncEngine) -> None:
    result = await engine.generate("echo:1", "hello there world")
    assert result.text == "hello there world "
    assert result.done_reason == "stop"
    assert result.stats.eval_count == 3
    assert result.stats.total_duration >= result.stats.eval_duration > 0
    assert result.stats.load_duration > 0  # this request loaded the model
    again = await engine.generate("echo:1", "x")
    assert again.stats.load_duration == 0
    pieces = [c async for c in engine.generate_stream("fixed:1", "ignored")]
    assert [c.text for c in pieces[:-1]] == ["one ", "two ", "three ", "four ", "five "]
    assert pieces[-1].done and pieces[-1].stats is not None
    await engine.close()


async def test_options_stop_and_max_tokens(engine: ff.AsyncEngine) -> None:
    r = await engine.generate("fixed:1", "", options={"num_predict": 2})
    assert (r.text, r.done_reason) == ("one two ", "length")
    r = await engine.generate("fixed:1", "", options={"stop": ["thr"]})
    assert (r.text, r.done_reason) == ("one two ", "stop")
    await engine.close()


async def test_chat_and_embed(engine: ff.AsyncEngine) -> None:
    r = await engine.chat("echo:1", [{"role": "user", "content": "hi you"}])
    assert r.text == "hi you "
    e = await engine.embed("echo:1", ["a", "b", "a"])
    assert len(e.embeddings) == 3 and e.embeddings[0] == e.embeddings[2] != e.embeddings[1]
    assert abs(sum(x * x for x in e.embeddings[0]) - 1) < 1e-9
    await engine.close()


async def test_unknown_model_and_format(engine: ff.AsyncEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="nope"):
        await engine.generate("nope", "x")
    m = Manifest(
        name="weird:1", source="test", format="weird", path=str(tmp_path), sha256="0" * 64, size=1
    )
    engine.store.save(m)
    with pytest.raises(UnsupportedFormat, match="weird"):
        await engine.generate("weird:1", "x")
    await engine.close()


async def test_device_override_is_checked(engine: ff.AsyncEngine) -> None:
    with pytest.raises(DeviceUnavailable, match=r"cuda:0.*available: cpu"):
        await engine.load("echo:1", device="cuda")
    with pytest.raises(ConfigError, match="unknown backend"):
        await engine.load("echo:1", backend="tensorrt")
    row = await engine.load("echo:1", device="cpu", backend="null")
    assert (row.name, row.backend, row.device) == ("echo:1", "null", "cpu")
    await engine.close()


async def test_broken_model_does_not_break_others(engine: ff.AsyncEngine) -> None:
    add_null_model(engine.settings.home, "broken:1", {"fail_load": "bad tensor data"})
    with pytest.raises(InvalidModelFile, match="bad tensor data"):
        await engine.generate("broken:1", "x")
    assert (await engine.generate("echo:1", "still fine")).text == "still fine "
    assert [m.name for m in (await engine.ps())] == ["echo:1"]
    await engine.close()


async def test_memory_budget_refuses_load(tmp_path: Path) -> None:
    settings = ff.Settings(home=tmp_path, max_memory=10 << 20)
    add_null_model(tmp_path, "big:1", {"memory": 50 << 20})
    engine = ff.AsyncEngine(settings)
    with pytest.raises(InsufficientMemory, match="requires 50 MiB, 10 MiB available"):
        await engine.generate("big:1", "x")
    await engine.close()


async def test_ps_unload_and_runstate(engine: ff.AsyncEngine) -> None:
    await engine.load("echo:1", keep_alive="10m")
    [row] = await engine.ps()
    assert row.name == "echo:1" and row.expires_in is not None and 590 < row.expires_in <= 600
    [published] = read_all(engine.settings.home)
    assert published["name"] == "echo:1"
    assert await engine.unload("echo:1")
    assert (await engine.ps()) == [] and read_all(engine.settings.home) == []
    await engine.close()


async def test_background_reaper_unloads_expired_models(engine: ff.AsyncEngine) -> None:
    await engine.generate("echo:1", "x", keep_alive="50ms")
    assert [m.name for m in (await engine.ps())] == ["echo:1"]
    for _ in range(500):  # the reaper wakes at the expiry; give a busy machine 5 s
        if not (await engine.ps()):
            break
        await asyncio.sleep(0.01)
    assert (await engine.ps()) == []
    assert read_all(engine.settings.home) == []
    await engine.close()


async def test_keep_alive_zero_unloads_after_request(engine: ff.AsyncEngine) -> None:
    await engine.generate("echo:1", "x", keep_alive=0)
    assert (await engine.ps()) == []
    await engine.close()


async def test_cancelling_a_stream_frees_the_slot(tmp_path: Path) -> None:
    add_null_model(tmp_path, "slow:1", {"reply": "a " * 1000, "token_delay": 0.01})
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path))
    stream = engine.generate_stream("slow:1", "")
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert len(got) == 3
    r = await asyncio.wait_for(engine.generate("slow:1", "", options={"max_tokens": 2}), 5)
    assert r.text == "a a "
    await engine.close()


def test_sync_engine_from_threads(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {"token_delay": 0.001})
    with ff.Engine(ff.Settings(home=tmp_path, num_parallel=2)) as engine:
        results: dict[int, str] = {}

        def work(i: int) -> None:
            results[i] = engine.generate("echo:1", f"n{i} done").text

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: f"n{i} done " for i in range(8)}
        chunks = list(engine.chat("echo:1", [{"role": "user", "content": "a b"}], stream=True))
        assert "".join(c.text for c in chunks) == "a b "


def test_options_merge_ignores_explicit_nones() -> None:
    base = ff.InferenceOptions(temperature=0.2, top_p=0.9)
    merged = base.merged(ff.InferenceOptions(temperature=None, seed=3, top_p=None))
    assert (merged.temperature, merged.top_p, merged.seed) == (0.2, 0.9, 3)
    assert base.merged(ff.InferenceOptions(temperature=0.0)).temperature == 0.0


def test_a_script_that_never_closes_its_engine_exits_quietly(tmp_path: Path) -> None:
    """``ff.Engine()`` without ``with``: used (a llama.cpp model loaded, a stream left
    open) and abandoned at exit. The atexit close unloads it and says nothing."""
    write_tiny_gguf(tmp_path / "tiny.gguf")
    script = (
        "import ferrousforge as ff\n"
        f"engine = ff.Engine(ff.Settings(home={str(tmp_path / 'home')!r}))\n"
        f"engine.pull({str(tmp_path / 'tiny.gguf')!r})\n"
        "print(engine.generate('tiny', 'a', raw=True, options={'max_tokens': 2}).done_reason)\n"
        "print(len(engine.embed('tiny', ['a b']).embeddings))\n"
        "stream = engine.generate('tiny', 'a', raw=True, stream=True, "
        "options={'max_tokens': 300})\n"
        "next(stream)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["length", "1"], "")
