"""The engine a notebook kernel uses: one per kernel, shared by the magics and the widgets.

In-process by default. With ``FORGE_URL`` set (by the user, or by the Jupyter server
extension for the kernels it starts) it is a client to that engine, with the same methods.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..interface import EngineClient
from ..mold import Backend

_lock = threading.Lock()
_state: dict[str, Any] = {}  # the kernel's engine: one per process, like the kernel itself


def shared() -> EngineClient:
    """The kernel's engine (``ferrousforge.Engine`` or ``ferrousforge.client.RemoteEngine``)."""
    with _lock:
        engine: EngineClient | None = _state.get("engine")
        if engine is None:
            engine = _state["engine"] = _connect()
        return engine


def use(engine: EngineClient | None) -> None:
    """Make ``engine`` the kernel's engine (tests, or a user's own configured one); None
    goes back to the default."""
    with _lock:
        _state["engine"] = engine


def register(
    model: object, *, name: str | None = None, models: Sequence[str] | None = None
) -> Backend:
    """``ff.register``: serve a custom model in the kernel's engine (``Engine.register``).
    A remote one (``FORGE_URL``, the Jupyter extension's, a hub's) runs in another process:
    a ConfigError says so in one line, and how to install a plugin package instead."""
    from ..backends.custom import elsewhere
    from ..sync_engine import Engine

    engine = shared()
    if not isinstance(engine, Engine):
        raise ConfigError(elsewhere(getattr(engine, "url", None)))
    return engine.register(model, name=name, models=models)


def _connect() -> EngineClient:
    from .hub import hub_service

    if found := hub_service():  # a hub user's server: the hub's shared engine
        from ..client import RemoteEngine

        return RemoteEngine(found[0], api_key=found[1])
    if url := os.environ.get("FORGE_URL"):
        from ..client import RemoteEngine

        return RemoteEngine(url, api_key=os.environ.get("FORGE_API_KEY"))
    from ..sync_engine import Engine

    return Engine()
