"""Advisory file locks, so two processes never write the same pull at once."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

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
