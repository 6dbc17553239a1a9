"""Dynamic batching for embeddings: concurrent requests to one model share forward passes,
each gets the vectors it would get alone, and one request's fault stays its own."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ferrousforge as ff
from ferrousforge.backends.embed_batch import Ask, EmbedBatcher, Vectors
from ferrousforge.errors import LimitExceeded
from ferrousforge.worker import Worker

from .tinymodel import write_tiny_gguf

SENTENCES = [
    "The cat sat on the warm mat by the door",
    "Stocks fell sharply on Monday",
    "She reads a book every evening before she goes to bed",
    "Rain is expected tomorrow",
    "He plays the guitar in a small band with friends",
    "The train to Paris leaves at nine in the morning",
    "A kitten sleeps in the sun",
    "Machine learning models need a lot of data to train well",
]


class Recorder:
    """A model's ``run``: vectors of the texts' lengths; records each batch it got."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, asks: list[Ask]) -> list[Vectors | Exception]:
        self.batches.append([t for a in asks for t in a.texts])
        out: list[Vectors | Exception] = []
        for a in asks:
            if a.max_tokens is not None and len(a.texts) > a.max_tokens:
                out.append(LimitExceeded("texts", len(a.texts), a.max_tokens, "max_embed_tokens"))
            else:
                out.append(([[float(len(t))] for t in a.texts], len(a.texts)))
        return out


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    w = Worker("test")
    yield w
    await w.stop()


async def test_requests_that_arrive_together_share_one_batch(worker: Worker) -> None:
    run = Recorder()
    b = EmbedBatcher(worker, run, wait=0.01)
    got = await asyncio.gather(*(b.embed([s], True, None) for s in SENTENCES))
    assert [v for v, _ in got] == [[[float(len(s))]] for s in SENTENCES]  # each its own
    assert run.batches == [SENTENCES] and dict(b.widths) == {8: 1}
    alone = await b.embed(["x"], True, None)  # later, alone: a batch of its own
    assert alone == ([[1.0]], 1) and dict(b.widths) == {8: 1, 1: 1}


async def test_a_request_that_breaks_a_limit_fails_alone(worker: Worker) -> None:
    b = EmbedBatcher(worker, Recorder(), wait=0.01)
    ok, bad = await asyncio.gather(
        b.embed(["a", "b"], True, None), b.embed(["a", "b"], True, 1), return_exceptions=True
    )
    assert ok == ([[1.0], [1.0]], 2) and isinstance(bad, LimitExceeded)


async def test_a_caller_that_left_is_skipped_and_big_requests_run_apart(worker: Worker) -> None:
    run = Recorder()
    b = EmbedBatcher(worker, run, wait=0.02, max_texts=4)
    gone = asyncio.create_task(b.embed(["gone"], True, None))
    await asyncio.sleep(0)
    gone.cancel()
    big, small = await asyncio.gather(
        b.embed(list("abcde"), True, None), b.embed(["z"], True, None)
    )
    assert len(big[0]) == 5 and small == ([[1.0]], 1)
    assert run.batches == [list("abcde"), ["z"]]  # over max_texts: each alone; "gone" never ran
    with pytest.raises(asyncio.CancelledError):
        await gone


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def from_threads(engine: ff.Engine, model: str, texts: list[str]) -> list[list[float]]:
    """Each text embedded by its own thread, all released at once."""
    start, out = threading.Barrier(len(texts)), [list[float]() for _ in texts]

    def one(i: int) -> None:
        start.wait()
        out[i] = engine.embed(model, texts[i]).embeddings[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def widths(engine: ff.Engine, model: str) -> dict[int, int]:
    return dict(engine.stats().occupancy[model].widths)


@pytest.mark.slow
def test_minilm_on_onnx_from_eight_threads_equals_one_by_one(minilm_engine: ff.Engine) -> None:
    model = "minilm:l6-onnx"
    alone = [minilm_engine.embed(model, s).embeddings[0] for s in SENTENCES]
    before = widths(minilm_engine, model)
    assert set(before) == {1}  # one by one: batches of one
    together = from_threads(minilm_engine, model, SENTENCES)
    assert all(cosine(a, b) >= 0.9999 for a, b in zip(alone, together, strict=True))
    after = widths(minilm_engine, model)
    wide = {w: n - before.get(w, 0) for w, n in after.items() if w > 1 and n > before.get(w, 0)}
    assert wide, f"no batch carried two requests: {after}"
    row = next(r for r in minilm_engine.ps() if r.name == model)
    assert row.slots == 16 and row.running == 0  # idle again


def test_llama_embeddings_from_eight_threads_equal_one_by_one(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the llama extra is not installed")
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    with ff.Engine(ff.Settings(home=tmp_path / "home", threads=1, embed_batch_wait=0.05)) as e:
        e.pull(str(gguf), name="tiny")
        texts = [s.lower() for s in SENTENCES]
        alone = [e.embed("tiny", t).embeddings[0] for t in texts]
        together = from_threads(e, "tiny", texts)
        assert all(cosine(a, b) >= 0.9999 for a, b in zip(alone, together, strict=True))
        assert max(widths(e, "tiny:latest")) > 1
