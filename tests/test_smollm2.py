"""The slow tier: smollm2:135m, a real chat model, through the CLI and the engine.

``./dev.sh test`` pulls it once into FORGE_TEST_HOME (~/.cache/ferrousforge/test-home)
before pytest runs, so these tests themselves touch no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

import ferrousforge as ff

from .apiserver import Running, running
from .threads import generate_in_threads

pytestmark = pytest.mark.slow
MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def home() -> Path:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/smollm2/135m.json").is_file():
        pytest.skip(f"{MODEL} is not in {home}; ./dev.sh test pulls it first")
    return home


@pytest.fixture(scope="module")
def engine(home: Path):
    with ff.Engine(ff.Settings(home=home, num_ctx=2048)) as engine:
        yield engine


def test_forge_run_answers_paris(home: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferrousforge",
            "run",
            MODEL,
            "What is the capital of France? Answer in one word.",
            "--seed",  # the model's own sampling (temperature 0.2), made reproducible
            "1",
        ],
        env=os.environ | {"FORGE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_streams_through_the_chatml_template(engine: ff.Engine) -> None:
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    chunks = list(engine.chat(MODEL, msgs, stream=True, options={"temperature": 0}))
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    assert len(chunks) > 3 and chunks[-1].done and chunks[-1].done_reason == "stop"
    stats = chunks[-1].stats
    assert stats is not None and stats.eval_count >= len(chunks) - 1
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_eight_threads_on_smollm2_one_at_a_time(home: Path) -> None:
    """With batching off (parallel 1) threads take turns on one context, so each answer
    equals its lone run exactly. Batched answers match up to near-ties instead (batched
    arithmetic differs): tests/test_llama_batch.py checks those."""
    prompts = [f"Count from {i} to {i + 5}:" for i in range(8)]
    opts = {"temperature": 0, "max_tokens": 16}
    with ff.Engine(ff.Settings(home=home, num_parallel=1, threads=2)) as engine:
        expected = {p: engine.generate(MODEL, p, raw=True, options=opts).text for p in prompts}
        assert generate_in_threads(engine, MODEL, prompts, opts) == expected
        assert all(expected.values())
        assert [m.slots for m in engine.ps()] == [1]


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Running]:
    with running(ff.Settings(home=home, num_ctx=2048)) as srv:
        yield srv


PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_ollama_client_on_smollm2(server: Running) -> None:
    client: Any = ollama.Client(host=server.url)
    r = client.chat(model=MODEL, messages=PARIS, options={"seed": 1})
    assert "Paris" in r.message.content
    assert 1e6 <= r.eval_duration / r.eval_count <= 1e9  # plausible nanoseconds per token
    assert 1e6 <= r.total_duration <= 120e9
    parts = list(client.chat(model=MODEL, messages=PARIS, stream=True, options={"seed": 1}))
    assert "Paris" in "".join(p.message.content for p in parts) and parts[-1].done
    g = client.generate(
        model=MODEL, prompt="1, 2, 3,", raw=True, options={"temperature": 0, "num_predict": 8}
    )
    assert "4" in g.response and g.eval_count == 8
    e = client.embed(model=MODEL, input=["a cat sits", "stock market"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 576
    assert MODEL in {m.model for m in client.list().models}
    client._client.close()


def test_openai_client_on_smollm2(server: Running) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        client: Any = c
        r = client.chat.completions.create(model=MODEL, messages=PARIS, seed=1)
        assert "Paris" in r.choices[0].message.content
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=PARIS, stream=True, seed=1)
        )
        assert "Paris" in "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
        out = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Give a JSON object for Paris."}],
            response_format={"type": "json_object"},
            max_tokens=60,
            temperature=0,
        )
        text = out.choices[0].message.content
        assert text.lstrip().startswith("{")
        e = client.embeddings.create(model=MODEL, input="a cat sits")
        assert len(e.data[0].embedding) == 576


def test_disconnect_stops_a_real_generation(server: Running) -> None:
    def generated() -> float:
        text = httpx.get(server.url + "/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("forge_generated_tokens_total"))
        return float(line.split()[1])

    body = {"model": MODEL, "prompt": "Tell a very long story.", "options": {"num_predict": 1500}}
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as s:
        lines = s.iter_lines()
        for _ in range(5):
            next(lines)
    start = time.monotonic()
    r = httpx.post(
        server.url + "/api/generate",
        timeout=60,
        json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 3}},
    )
    assert r.status_code == 200 and r.json()["eval_count"] == 3
    assert time.monotonic() - start < 10  # 1500 tokens at ~100 tok/s would take 15 s
    before = generated()
    time.sleep(0.5)
    assert generated() == before


def test_the_embedding_context_counts_against_the_memory_budget(engine: ff.Engine) -> None:
    """The embedding context is a second llama.cpp context: its KV cache and a compute
    buffer that logits every token of a whole context (about n_ctx × n_vocab × 4 bytes).
    What ``ps`` reports, and the budget counts, grows by it once it is made."""
    engine.unload(MODEL)
    engine.load(MODEL)
    before = next(m.memory for m in engine.ps() if m.name == MODEL)
    engine.embed(MODEL, "a cat sits")
    after = next(m.memory for m in engine.ps() if m.name == MODEL)
    vocab = int(engine.show(MODEL).metadata.extra["vocab_size"])
    assert after - before >= 2048 * vocab * 4  # num_ctx 2048: at least the logits buffer
    runtime = engine._engine.scheduler.runners[MODEL].mold._runtime  # type: ignore[attr-defined]
    assert after == engine.show(MODEL).size + runtime.held_bytes
