"""One long-lived thread per blocking runtime instance, with an async face.

llama.cpp must be called from one dedicated thread (DESIGN.md §6): a shared pool gives each
call a new OpenMP team and decode drops to a third of its speed. A Worker runs its jobs one
at a time, so a whole stream holds the instance until it is exhausted or cancelled, which
also serializes every call on a non-thread-safe runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _END = range(3)


class Worker:
    """Runs callables and generators on its own thread, in submission order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self) -> None:
        """Stop the thread once the jobs already submitted have run."""
        self._jobs.put(None)

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the worker thread, after the jobs already submitted; nobody
        awaits it, so it must report its own outcome (a batch loop does)."""
        self._jobs.put(fn)

    def run_pending(self) -> bool:
        """From inside a long job (a batch loop, between its steps): run the jobs queued
        meanwhile, so a tokenize or an embed does not wait for every stream to end.
        False once ``close()`` was asked: the long job should end."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                self._jobs.put(None)  # for the thread's own loop, once the long job returns
                return False
            job()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    async def stop(self) -> None:
        """Close, and wait (without a thread of the loop's pool) until the thread ends."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put(lambda: _post(loop, _settle, done, None, None))
        self.close()
        await done  # the last job ran: the thread returns at once
        self._thread.join()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and await its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as e:
                _post(loop, _settle, fut, None, e)
            else:
                _post(loop, _settle, fut, result, None)

        self._jobs.put(job)
        return await fut

    async def collect(self, make: Callable[[threading.Event], Iterator[T]]) -> list[T]:
        """Run ``make(cancel)`` to its end on the worker thread: one hand-off, not one per
        item, so the event loop sleeps meanwhile. Cancelling the caller sets ``cancel``."""
        cancel = threading.Event()

        def run() -> list[T]:
            with contextlib.closing(make(cancel)) as items:  # type: ignore[type-var]
                return list(items)

        try:
            return await self.call(run)
        finally:
            cancel.set()

    async def stream(self, make: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
        """Iterate ``make(cancel)`` on the worker thread, yielding its items here.

        Closing the async iterator sets ``cancel``; the worker stops after the current item,
        and ``make`` may also check the event itself between expensive steps.
        """
        cancel = threading.Event()

        def run(report: Callable[[T], None]) -> None:
            with contextlib.closing(make(cancel)) as items:  # type: ignore[type-var]
                for item in items:
                    report(item)
                    if cancel.is_set():
                        break

        async def work(report: Callable[[T], None]) -> None:
            await self.call(run, report)

        try:
            async for item in bridged(work):
                yield item
        finally:
            cancel.set()


async def bridged(
    work: Callable[[Callable[[T], None]], Awaitable[None]],
) -> AsyncGenerator[T, None]:
    """Run ``work(report)`` as a task and yield here, in order, what ``report`` is given
    from any thread, until ``work`` ends (its error is raised here). Closing the generator
    cancels the work. This is the one road from a thread's items to the event loop.

    Reports and the end are all posted through ``call_soon_threadsafe``, whatever thread
    reports (the loop's own too), so they arrive in the order they were made and no item
    is lost behind the end.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def run() -> None:
        try:
            await work(lambda item: _post(loop, inbox.put_nowait, (_ITEM, item)))
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            _post(loop, inbox.put_nowait, (_ERROR, e))
        else:
            _post(loop, inbox.put_nowait, (_END, None))  # queued behind every report

    task = loop.create_task(run())
    try:
        while True:
            kind, value = await inbox.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        task.cancel()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the job ran
        loop.call_soon_threadsafe(fn, *args)


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


async def uncancellable(fut: asyncio.Future[None]) -> None:
    """Wait for ``fut`` through any number of cancellations, then raise the first one."""
    cancelled: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError as e:
            cancelled = cancelled or e
    if cancelled is not None:
        raise cancelled
