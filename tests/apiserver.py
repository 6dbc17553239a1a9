"""A real uvicorn server on 127.0.0.1 in a thread, over a fresh engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from ferrousforge.api.server import ServerThread
from ferrousforge.config import Settings
from ferrousforge.engine import AsyncEngine


@dataclass
class Running:
    url: str
    engine: AsyncEngine


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Running]:
    server = ServerThread(settings)
    try:
        yield Running(server.url, server.engine)
    finally:
        server.stop()
