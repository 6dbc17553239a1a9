"""Advisory file locks: one per pull in flight, and one for the whole store."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..progress import Progress, ProgressCallback

try:
    import fcntl
except ImportError:  # Windows: pulls there are not guarded against each other
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def pull_lock(locks: Path, key: str, progress: ProgressCallback) -> Iterator[None]:
    """Hold the lock for ``key`` (a URL or catalog name), waiting if another pull holds it."""
    if fcntl is None:
        yield
        return
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(Progress(f"waiting for another pull of {key}"))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class StoreLock:
    """The store-wide lock: changes to manifests and blobs (rm, cp, the end of a pull) hold
    it, so a CLI and a server on one home never leave a manifest naming a deleted blob.

    Exclusive across processes (``flock`` on ``<locks>/store.lock``) and threads (a
    re-entrant lock, so a change may call another: ``cp`` saves, saving releases a blob).
    """

    def __init__(self, locks: Path) -> None:
        self._path = locks / "store.lock"
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._file: IO[str] | None = None

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._depth == 0 and fcntl is not None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("a+")
                fcntl.flock(self._file, fcntl.LOCK_EX)
            except BaseException:
                self._close()
                self._thread_lock.release()
                raise
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._close()
        self._thread_lock.release()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None
