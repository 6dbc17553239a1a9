"""Scheduler semantics with fake Molds, a fake clock and a fake memory probe: milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from ferrousforge.errors import InsufficientMemory, QueueFull
from ferrousforge.mold import Mold, Occupancy
from ferrousforge.scheduler import Scheduler
from ferrousforge.schema import Chunk, ModelMetadata, Request, Result

MB = 1 << 20


class FakeMold:
    """Implements the Mold protocol; records its life for the assertions."""

    backend, device = "fake", "cpu"
    tasks = frozenset({"generate", "batch"})
    context_length = 128

    def __init__(self, name: str, memory: int, log: list[str], slots: int = 1) -> None:
        self.name, self.memory, self._log, self.slots = name, memory, log, slots
        self.metadata = ModelMetadata(name=name)
        self._loaded = False

    async def load(self) -> None:
        self._log.append(f"load {self.name}")
        self._loaded = True

    async def unload(self) -> None:
        self._log.append(f"unload {self.name}")
        self._loaded = False

    async def infer(self, req: Request) -> Result:
        return Result("ok")

    async def infer_stream(self, req: object) -> AsyncIterator[Chunk]:
        yield Chunk("ok", done=True, done_reason="stop")

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        return []

    async def detokenize(self, ids: Sequence[int]) -> str:
        return ""

    def occupancy(self) -> Occupancy:
        return Occupancy(self.slots)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: object) -> Scheduler:
    defaults: dict[str, object] = dict(memory_probe=lambda: 10_000 * MB, clock=clock)
    return Scheduler(**(defaults | kw))  # type: ignore[arg-type]


def factory(name: str, log: list[str], memory: int = 100 * MB, slots: int = 1):
    async def open_mold() -> Mold:
        return FakeMold(name, memory, log, slots)

    return open_mold


async def use(
    s: Scheduler, name: str, log: list[str], keep_alive: float | None = None, memory: int = 100 * MB
) -> None:
    async with s.acquire(name, factory(name, log, memory), keep_alive=keep_alive) as lease:
        assert lease.mold.name == name


async def hold(s: Scheduler, log: list[str], until: asyncio.Event) -> None:
    """Keep model "a" busy until ``until`` is set."""
    async with s.acquire("a", factory("a", log)):
        await until.wait()


def test_fake_is_a_mold(log: list[str]) -> None:
    assert isinstance(FakeMold("x", 1, log), Mold)


async def test_lazy_load_once_and_reuse(clock: Clock, log: list[str]) -> None:
    s = make(clock)
    assert s.runners == {}
    await use(s, "a", log)
    await use(s, "a", log)
    assert log == ["load a"]
    assert s.loads == 1


async def test_keep_alive_expiry(clock: Clock, log: list[str]) -> None:
    s = make(clock, default_keep_alive=300.0)
    await use(s, "a", log)
    await use(s, "b", log, keep_alive=10.0)
    clock.now += 9.0
    assert await s.reap() == []
    clock.now += 2.0
    assert await s.reap() == ["b"]
    assert list(s.runners) == ["a"]
    clock.now += 300.0
    assert await s.reap() == ["a"]
    assert log == ["load a", "load b", "unload b", "unload a"]


async def test_keep_alive_zero_unloads_at_once_and_negative_never(
    clock: Clock, log: list[str]
) -> None:
    s = make(clock)
    await use(s, "now", log, keep_alive=0)
    assert "now" not in s.runners
    await use(s, "forever", log, keep_alive=-1)
    clock.now += 10**9
    assert await s.reap() == []
    assert "forever" in s.runners


async def test_lru_eviction_at_max_loaded(clock: Clock, log: list[str]) -> None:
    s = make(clock, max_loaded=2)
    await use(s, "a", log)
    clock.now += 1
    await use(s, "b", log)
    clock.now += 1
    await use(s, "a", log)  # a is now more recent than b
    clock.now += 1
    await use(s, "c", log)
    assert sorted(s.runners) == ["a", "c"]
    assert log == ["load a", "load b", "unload b", "load c"]


async def test_memory_budget_evicts_idle_then_refuses(clock: Clock, log: list[str]) -> None:
    s = make(clock, max_memory=250 * MB)
    await use(s, "a", log, memory=100 * MB)
    await use(s, "b", log, memory=100 * MB)
    await use(s, "c", log, memory=100 * MB)  # needs a to go
    assert sorted(s.runners) == ["b", "c"]
    with pytest.raises(InsufficientMemory) as e:
        await use(s, "huge", log, memory=300 * MB)
    assert e.value.required == 300 * MB
    assert e.value.available == 250 * MB
    assert "300 MiB" in str(e.value) and "250 MiB" in str(e.value)


async def test_memory_probe_is_consulted(clock: Clock, log: list[str]) -> None:
    s = make(clock, memory_probe=lambda: 50 * MB)
    with pytest.raises(InsufficientMemory) as e:
        await use(s, "a", log, memory=100 * MB)
    assert e.value.available == 50 * MB
    assert s.runners == {}


async def test_busy_model_is_not_evicted(clock: Clock, log: list[str]) -> None:
    s = make(clock, max_loaded=1)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(s, log, release))
    await asyncio.sleep(0)
    other = asyncio.create_task(use(s, "b", log))
    await asyncio.sleep(0.01)
    assert log == ["load a"]  # b waits for a to go idle
    release.set()
    await asyncio.gather(holder, other)
    assert log == ["load a", "unload a", "load b"]


async def test_queue_limit_and_priority(clock: Clock, log: list[str]) -> None:
    s = make(clock, max_queue=2)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(tag: str, priority: int = 0) -> None:
        async with s.acquire("a", factory("a", log), priority=priority):
            order.append(tag)
            if tag == "first":
                await gate.wait()

    first = asyncio.create_task(job("first"))
    await asyncio.sleep(0.01)
    low = asyncio.create_task(job("low", priority=0))
    high = asyncio.create_task(job("high", priority=5))
    await asyncio.sleep(0.01)
    assert s.queued == 2
    with pytest.raises(QueueFull, match="max_queue=2"):
        await job("rejected")
    gate.set()
    await asyncio.gather(first, low, high)
    assert order == ["first", "high", "low"]
    assert s.queued == 0


async def peak(s: Scheduler, key: str, make_mold: Any, jobs: int) -> int:
    """The most requests that held ``key`` at once, of ``jobs`` sent together."""
    active = most = 0

    async def job() -> None:
        nonlocal active, most
        async with s.acquire(key, make_mold):
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(job() for _ in range(jobs)))
    return most


async def test_parallel_slots(clock: Clock, log: list[str]) -> None:
    s = make(clock)
    assert await peak(s, "a", factory("a", log, slots=2), 6) == 2
    assert log == ["load a"]


async def test_a_model_that_does_not_batch_gets_one_slot(clock: Clock, log: list[str]) -> None:
    s = make(clock)

    async def serial() -> Mold:
        mold = FakeMold("enc", 1, log, slots=4)
        mold.tasks = frozenset({"generate"})  # no "batch": one request at a time
        return mold

    assert await peak(s, "enc", serial, 4) == 1
    async with s.acquire("a", factory("a", log, slots=3)):  # a batching model: 3 slots
        assert s.runners["a"].slots.capacity == 3


async def test_cancelled_waiter_leaves_queue(clock: Clock, log: list[str]) -> None:
    s = make(clock)
    gate = asyncio.Event()
    holder = asyncio.create_task(hold(s, log, gate))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(use(s, "a", log))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await holder
    await use(s, "a", log)  # the slot was not leaked
    assert s.runners["a"].refs == 0


async def test_unload_busy_model_waits_for_idle(clock: Clock, log: list[str]) -> None:
    s = make(clock)
    gate = asyncio.Event()
    holder = asyncio.create_task(hold(s, log, gate))
    await asyncio.sleep(0.01)
    assert await s.unload("a")
    assert "a" in s.runners
    gate.set()
    await holder
    assert "a" not in s.runners


@pytest.mark.timeout(10)
async def test_a_request_for_a_model_unloaded_as_its_load_ended_loads_it_again(
    clock: Clock, log: list[str]
) -> None:
    """Found by the soak: the load task ended, an unload removed its runner in the same loop
    turn, and the next request found the finished task still listed, awaited it (which
    returns without yielding) and looped forever, freezing the whole server."""
    s = make(clock)
    raced: list[str] = []

    class Racing(FakeMold):
        async def load(self) -> None:
            await super().load()
            asyncio.get_running_loop().create_task(racer())  # runs before the done-callbacks

    async def racer() -> None:
        await s.unload("a")
        async with s.acquire("a", factory("a", log)):
            raced.append("served")

    async def racing_factory() -> Mold:
        return Racing("a", MB, log)

    async with s.acquire("a", racing_factory):
        pass
    for _ in range(50):
        if raced:
            break
        await asyncio.sleep(0.01)
    assert raced == ["served"] and log.count("load a") == 2
