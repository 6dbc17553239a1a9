"""Dynamic batching for embeddings: concurrent requests to one model run as one batch.

Requests that arrive while the model's worker is busy queue, and all of them go into the
next batch; one that finds the worker idle waits ``wait`` seconds for company first. A
batch is one job on the Mold's worker thread: the Mold's ``run`` gets the requests and
answers each one's vectors or the error it alone raised (a text too long, a token limit),
so one bad request never fails the others. A batch takes requests in arrival order up to
``max_texts`` texts (a larger request runs alone), and a caller that left is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..worker import Worker

Vectors = tuple[list[list[float]], int]  # one request's embeddings and its token count


@dataclass(eq=False)
class Ask:
    """One embed request waiting for its batch."""

    texts: Sequence[str]
    truncate: bool
    max_tokens: int | None
    future: asyncio.Future[Vectors] = field(repr=False)


Run = Callable[[list[Ask]], list[Vectors | Exception]]


class EmbedBatcher:
    """Gathers one model's concurrent embed requests; ``embed`` is its face."""

    def __init__(self, worker: Worker, run: Run, wait: float, max_texts: int = 256) -> None:
        self._worker, self._run, self.wait, self.max_texts = worker, run, wait, max_texts
        self._queue: deque[Ask] = deque()
        self._drain: asyncio.Task[None] | None = None
        self.running = self.batches = 0
        self.widths: Counter[int] = Counter()  # batches by the requests they carried

    async def embed(self, texts: Sequence[str], truncate: bool, max_tokens: int | None) -> Vectors:
        """``texts``' vectors and token count, computed in a batch with whatever else came."""
        loop = asyncio.get_running_loop()
        ask = Ask(texts, truncate, max_tokens, loop.create_future())
        self._queue.append(ask)
        if self._drain is None:
            self._drain = loop.create_task(self._batches())
        return await ask.future  # a caller cancelled here leaves a done future: skipped

    async def _batches(self) -> None:
        try:
            if self.wait:
                await asyncio.sleep(self.wait)
            while asks := self._take():
                self.running = len(asks)
                try:
                    results: Sequence[Vectors | BaseException] = await self._worker.call(
                        self._run, asks
                    )
                except asyncio.CancelledError:
                    for ask in [*asks, *self._queue]:
                        ask.future.cancel()
                    raise
                except Exception as e:  # the model failed, not one request: all of them
                    results = [e] * len(asks)
                finally:
                    self.running = 0
                self.batches += 1
                self.widths[len(asks)] += 1
                for ask, result in zip(asks, results, strict=True):
                    if ask.future.done():
                        continue
                    if isinstance(result, BaseException):
                        ask.future.set_exception(result)
                    else:
                        ask.future.set_result(result)
        finally:
            self._drain = None

    def _take(self) -> list[Ask]:
        asks: list[Ask] = []
        texts = 0
        while self._queue:
            ask = self._queue[0]
            if ask.future.done():  # its caller left
                self._queue.popleft()
                continue
            if asks and texts + len(ask.texts) > self.max_texts:
                break
            asks.append(self._queue.popleft())
            texts += len(ask.texts)
        return asks

    async def close(self) -> None:
        """Stop gathering; requests still waiting are cancelled."""
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        for ask in self._queue:
            ask.future.cancel()
        self._queue.clear()
