"""Pulls on threads of their own: at most ``max_pulls`` at once, a bounded number waiting,
and a caller that leaves stops its pull at the next progress step.

The default executor is shared (device probes and unloads use threads too) and small (six
threads on two cores): slow downloads there would starve everything else.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import Interrupted, QueueFull
from .progress import Progress, ProgressCallback, ignore
from .store.manifest import Manifest
from .store.policy import PullPolicy
from .store.store import Store


class Pulls:
    def __init__(self, store: Store, max_pulls: int) -> None:
        self._store, self.max_pulls = store, max_pulls
        self._pool = ThreadPoolExecutor(max_pulls, thread_name_prefix="forge-pull")
        self.waiting = 0  # pulls running or queued

    async def run(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        policy: PullPolicy | None = None,
        force: bool = False,
    ) -> Manifest:
        """``Store.pull`` on a pull thread; a download's partial stays for a resume."""
        if self.waiting >= 4 * self.max_pulls:
            raise QueueFull(f"{self.waiting} pulls are waiting (max_pulls); retry later")
        cancelled = threading.Event()

        def report(p: Progress) -> None:
            if cancelled.is_set():
                raise Interrupted(f"the pull of {spec} was cancelled")
            progress(p)

        work = functools.partial(
            self._store.pull,
            spec,
            name=name,
            sha256=sha256,
            progress=report,
            policy=policy,
            force=force,
        )
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
