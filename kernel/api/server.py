"""``forge serve``: uvicorn on a socket bound here, so a busy port is a one-line error."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

from ..config import Settings
from ..engine import AsyncEngine
from ..errors import ConfigError
from .app import create_app

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or ConfigError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off only on sockets whose proto says TCP, and
    # with it on, every reply after a connection's first waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; is another server (ollama, "
            "forge serve) running there? choose another with --port"
        ) from None
    sock.listen(2048)
    return sock


def make_server(settings: Settings, sock: socket.socket) -> tuple[uvicorn.Server, AsyncEngine]:
    """A uvicorn Server for the app over a new engine (run it with ``.run(sockets=[sock])``)."""
    import uvicorn

    engine = AsyncEngine(settings)
    app = create_app(settings, engine)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
    )
    return uvicorn.Server(config), engine


class ServerThread:
    """The app over a new engine, served from a thread of its own on 127.0.0.1 (a free port
    unless given): for hosts that embed the engine (the Jupyter extension) and for tests."""

    def __init__(self, settings: Settings, port: int = 0, timeout: float = 30) -> None:
        self._sock = bind("127.0.0.1", port)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        # the Host check follows the bind: loopback here, whatever FORGE_HOST says
        loopback = settings.model_copy(update={"host": "127.0.0.1"})
        self.server, self.engine = make_server(loopback, self._sock)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="forge-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ConfigError(f"the engine's HTTP server did not start within {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._sock.close()


def serve(settings: Settings) -> None:
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    server, _ = make_server(settings, sock)
    from .siteguard import is_loopback

    authenticated = settings.api_keys or settings.api_keys_file or settings.jwt_secret
    if not is_loopback(str(host)) and not (authenticated or settings.jwt_public_key):
        log.warning(
            "listening on %s without an API key: anyone who reaches this address can use and "
            "change this engine (set --api-key; --allowed-host checks Host names)",
            host,
        )
    log.warning(
        "serving on http://%s:%d  (Ollama API /api, OpenAI API /v1, docs /docs, browser demo "
        "/web/)",
        host,
        port,
    )
    server.run(sockets=[sock])


def serve_for_parent(settings: Settings) -> None:
    """``serve``, ending as SIGTERM does once the process that started this one is gone,
    even killed outright: a supervised engine never outlives its supervisor."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:  # the kernel reparents an orphan
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="forge-parent-watch", daemon=True).start()
    serve(settings)
