"""A real uvicorn server on 127.0.0.1 in a thread, over a fresh engine."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ferrousforge.api.server import bind, make_server
from ferrousforge.config import Settings
from ferrousforge.engine import AsyncEngine


@dataclass
class Running:
    url: str
    engine: AsyncEngine


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Running]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server, engine = make_server(settings, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", engine)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
