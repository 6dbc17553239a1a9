"""The engine scheduler (seed §4) with Ollama's semantics.

Lazy load on first use; ``keep_alive`` per request (0 unloads at once, negative never);
at most ``max_loaded`` models, evicting the least recently used idle one; a memory budget
checked before each load; as many slots per model as it serves at once (its
``occupancy().slots`` if it batches, else one) and one bounded, prioritized FIFO queue.
Its collaborators (the Mold factory, the memory probe and the clock) are parameters, so
tests drive eviction and expiry in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .errors import InsufficientMemory, Interrupted, QueueFull
from .mold import Mold

log = logging.getLogger(__name__)

MoldFactory = Callable[[], Awaitable[Mold]]  # opens (does not load) one model


@dataclass
class Runner:
    """A loaded Mold and its bookkeeping."""

    key: str
    mold: Mold
    slots: Slots
    load_duration: int = 0  # ns
    refs: int = 0
    last_used: float = 0.0
    keep_alive: float = 300.0
    expires_at: float | None = None  # clock time; None while in use or kept forever
    doomed: bool = False  # unload as soon as the last request ends


class Slots:
    """``capacity`` concurrent holders; waiters are served by priority, then arrival."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.busy = capacity, 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, priority: int = 0) -> None:
        if self.busy < self.capacity and not self._waiters:
            self.busy += 1
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (-priority, next(self._seq), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut  # release() hands its slot over: busy is unchanged
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            else:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self.busy -= 1


@dataclass
class Lease:
    """What ``Scheduler.acquire`` yields: the Mold, and the load time if this call loaded it."""

    mold: Mold
    load_duration: int = 0
    runner: Runner | None = field(default=None, repr=False)


class Scheduler:
    def __init__(
        self,
        *,
        max_loaded: int = 3,
        max_queue: int = 512,
        max_memory: int | None = None,
        default_keep_alive: float = 300.0,
        memory_probe: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[Runner], None] | None = None,
        on_unload: Callable[[Runner], None] | None = None,
    ) -> None:
        self.max_loaded, self.max_queue = max_loaded, max_queue
        self.max_memory, self.default_keep_alive = max_memory, default_keep_alive
        self._probe, self._clock = memory_probe, clock
        self._on_load, self._on_unload = on_load, on_unload
        self.runners: dict[str, Runner] = {}
        self._loading: dict[str, asyncio.Task[Runner]] = {}
        self._claims: dict[str, int] = {}  # requests waiting on each key's load
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._queued = 0
        self.loads = self.unloads = 0

    @property
    def queued(self) -> int:
        return self._queued

    @asynccontextmanager
    async def acquire(
        self,
        key: str,
        factory: MoldFactory,
        *,
        keep_alive: float | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Lease]:
        """Hold one slot of model ``key``, loading it first if needed."""
        if self._queued >= self.max_queue:
            raise QueueFull(
                f"server busy: {self._queued} requests queued (max_queue={self.max_queue}); "
                "retry later"
            )
        self._queued += 1
        loaded_here = False
        try:
            while True:
                runner = self.runners.get(key)
                if runner is None:
                    # Claimed while loading: the load ends in its own task, and another
                    # request's load must not evict it before this one takes its reference.
                    self._claims[key] = self._claims.get(key, 0) + 1
                    try:
                        runner, loaded_here = await self._ensure_loaded(key, factory)
                    finally:
                        self._claims[key] -= 1
                        if not self._claims[key]:
                            del self._claims[key]
                if self.runners.get(key) is runner:  # not evicted while we waited
                    break
            runner.refs += 1
            runner.expires_at = None
            try:
                await runner.slots.acquire(priority)
            except BaseException:
                await self._release(runner, keep_alive)
                raise
        finally:
            self._queued -= 1
        try:
            yield Lease(runner.mold, runner.load_duration if loaded_here else 0, runner)
        finally:
            runner.slots.release()
            await self._release(runner, keep_alive)

    async def _ensure_loaded(self, key: str, factory: MoldFactory) -> tuple[Runner, bool]:
        """The runner of ``key``, loading it if needed; True when this call started the load.

        The load is a task of its own, awaited through ``shield``: a waiter that times out
        or leaves stops waiting, but the load goes on for the others, and its memory is
        registered (and later reaped) instead of held by a thread nobody tracks.
        """
        task = self._loading.get(key)
        if task is not None and task.done():
            # Finished, and listed until _loaded runs a loop turn later: its runner may be
            # unloaded already, and awaiting it again would return at once, forever.
            task = None
        started = task is None
        if task is None:
            loading = self._load_in_turn(key, factory)
            task = asyncio.get_running_loop().create_task(loading)
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        try:
            return await asyncio.shield(task), started
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # this waiter was cancelled; the load goes on
            raise Interrupted(f"loading {key} was cancelled; retry") from None

    def _loaded(self, key: str, task: asyncio.Task[Runner]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved: a load nobody waits for any more is not an error

    async def _load_in_turn(self, key: str, factory: MoldFactory) -> Runner:
        async with self._load_lock:  # one load at a time: each sees the others' memory
            return await self._load(key, factory)

    async def _load(self, key: str, factory: MoldFactory) -> Runner:
        mold = await factory()
        need = mold.memory
        while True:
            available = self.available_memory()
            fits = need <= available and len(self.runners) < self.max_loaded
            if fits:
                break
            if await self._evict_one():
                continue
            reclaimable = sum(r.mold.memory for r in self.runners.values())
            if need > available + reclaimable:
                raise InsufficientMemory(key, need, available + reclaimable)
            async with self._changed:  # every model is busy: wait for one to go idle
                await self._changed.wait()
        start = time.perf_counter_ns()
        try:
            await mold.load()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # free what a half-done load holds
                await asyncio.shield(mold.unload())
            raise
        slots = Slots(max(1, mold.occupancy().slots) if "batch" in mold.tasks else 1)
        runner = Runner(key, mold, slots, time.perf_counter_ns() - start)
        runner.last_used = self._clock()
        if self.default_keep_alive >= 0:  # reaped like any idle model if nobody claims it
            runner.expires_at = runner.last_used + self.default_keep_alive
        self.runners[key] = runner
        self.loads += 1
        log.info("loaded %s on %s/%s", key, mold.backend, mold.device)
        if self._on_load is not None:
            self._on_load(runner)
        return runner

    def available_memory(self) -> int:
        """Bytes a new model may use: free RAM, capped by what ``max_memory`` leaves."""
        free = self._probe()
        if self.max_memory is None:
            return free
        used = sum(r.mold.memory for r in self.runners.values())
        return max(0, min(free, self.max_memory - used))

    async def _evict_one(self) -> bool:
        idle = [r for r in self.runners.values() if self._idle(r)]
        if not idle:
            return False
        await self._unload(min(idle, key=lambda r: r.last_used))
        return True

    def _idle(self, runner: Runner) -> bool:
        return runner.refs == 0 and not self._claims.get(runner.key)

    async def _release(self, runner: Runner, keep_alive: float | None) -> None:
        runner.refs -= 1
        runner.last_used = self._clock()
        runner.keep_alive = self.default_keep_alive if keep_alive is None else keep_alive
        if runner.refs == 0:
            if runner.keep_alive == 0 or runner.doomed:
                await self._unload(runner)
            elif runner.keep_alive > 0:
                runner.expires_at = runner.last_used + runner.keep_alive
        async with self._changed:
            self._changed.notify_all()

    async def _unload(self, runner: Runner) -> None:
        if self.runners.get(runner.key) is not runner:
            return
        del self.runners[runner.key]
        self.unloads += 1
        try:
            await runner.mold.unload()
        finally:
            log.info("unloaded %s", runner.key)
            if self._on_unload is not None:
                self._on_unload(runner)
            async with self._changed:
                self._changed.notify_all()

    async def unload(self, key: str) -> bool:
        """Unload ``key`` now if it is idle, else as soon as its last request ends."""
        runner = self.runners.get(key)
        if runner is None:
            return False
        if runner.refs == 0:
            await self._unload(runner)
        else:
            runner.doomed = True
        return True

    async def reap(self) -> list[str]:
        """Unload every idle model whose keep_alive has run out; returns their keys."""
        now = self._clock()
        expired = [
            r
            for r in self.runners.values()
            if self._idle(r) and r.expires_at is not None and r.expires_at <= now
        ]
        for r in expired:
            await self._unload(r)
        return [r.key for r in expired]

    def next_expiry(self) -> float | None:
        times = [r.expires_at for r in self.runners.values() if r.expires_at is not None]
        return min(times, default=None)

    def expires_in(self, runner: Runner) -> float | None:
        return None if runner.expires_at is None else runner.expires_at - self._clock()

    async def run_reaper(
        self, max_sleep: float = 1.0, on_reap: Callable[[list[str]], None] | None = None
    ) -> None:
        """Reap forever, waking for the next expiry or after ``max_sleep`` seconds."""
        while True:
            if (reaped := await self.reap()) and on_reap is not None:
                on_reap(reaped)
            nxt = self.next_expiry()
            wait = max_sleep if nxt is None else min(max_sleep, max(0.01, nxt - self._clock()))
            await asyncio.sleep(wait)

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        for task in list(self._loading.values()):
            with contextlib.suppress(BaseException):
                await task
        for r in list(self.runners.values()):
            await self._unload(r)
