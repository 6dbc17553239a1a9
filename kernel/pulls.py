"""Pulls and conversions on threads of their own: at most ``max_pulls`` at once, a bounded
number waiting, and a caller that leaves stops its work at the next progress step.

The default executor is shared (device probes and unloads use threads too) and small (six
threads on two cores): slow downloads there would starve everything else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import Interrupted, QueueFull
from .progress import Progress, ProgressCallback

T = TypeVar("T")


class Pulls:
    def __init__(self, max_pulls: int) -> None:
        self.max_pulls = max_pulls
        self._pool = ThreadPoolExecutor(max_pulls, thread_name_prefix="forge-pull")
        self.waiting = 0  # pulls running or queued

    async def run(
        self, what: str, work: Callable[[ProgressCallback], T], progress: ProgressCallback
    ) -> T:
        """``work(report)`` on a pull thread; ``report`` passes progress on to ``progress``
        (on that thread) and, once the caller is cancelled, stops the work by raising."""
        if self.waiting >= 4 * self.max_pulls:
            raise QueueFull(f"{self.waiting} pulls are waiting (max_pulls); retry later")
        cancelled = threading.Event()

        def report(p: Progress) -> None:
            if cancelled.is_set():
                raise Interrupted(f"{what} was cancelled")
            progress(p)

        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, report)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
