"""Plugin hooks (seed §10): code that runs when models load and unload and around inference.

A plugin is any object with some of the methods of ``Plugin``; it is registered under the
``ferrousforge.hooks`` entry-point group (a class or factory taking no arguments) or passed
to the engine directly. The built-in Prometheus metrics are fed through these same hooks.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from .plugins import load_group
from .schema import Stats

GROUP = "ferrousforge.hooks"
log = logging.getLogger(__name__)

# Who asks, set by the HTTP API for the request being served, so events and logs carry it.
current_request_id: ContextVar[str] = ContextVar("forge_request_id", default="")
current_client: ContextVar[str] = ContextVar("forge_client", default="")


@dataclass(frozen=True, slots=True)
class ModelEvent:
    name: str
    backend: str
    device: str
    memory: int
    load_duration: int = 0  # ns; 0 for unloads


@dataclass(frozen=True, slots=True)
class InferenceEvent:
    model: str
    task: str  # "generate", "chat", "embed"
    request_id: str = ""
    client: str = ""  # the authenticated principal, when served over HTTP
    stats: Stats | None = None  # on end
    first_token_ns: int = 0  # time to first token, on end (0: none or not a stream)
    error: str | None = None  # on end, when it failed or was cancelled


class Plugin(Protocol):
    def on_model_load(self, event: ModelEvent) -> None: ...
    def on_model_unload(self, event: ModelEvent) -> None: ...
    def on_inference_start(self, event: InferenceEvent) -> None: ...
    def on_inference_end(self, event: InferenceEvent) -> None: ...


class Hooks:
    """Calls every plugin's hook; a failing plugin is logged, never fatal."""

    def __init__(self, plugins: list[Any] | None = None) -> None:
        self.plugins: list[Any] = list(plugins or [])

    @classmethod
    def discover(cls) -> Hooks:
        return cls([plugin for _, plugin in load_group(GROUP)])

    def add(self, plugin: Any) -> None:
        self.plugins.append(plugin)

    def _call(self, name: str, event: object) -> None:
        for plugin in self.plugins:
            fn = getattr(plugin, name, None)
            if fn is None:
                continue
            try:
                fn(event)
            except Exception:
                log.exception("hook %s of %s failed", name, type(plugin).__name__)

    def model_loaded(self, event: ModelEvent) -> None:
        self._call("on_model_load", event)

    def model_unloaded(self, event: ModelEvent) -> None:
        self._call("on_model_unload", event)

    def inference_started(self, event: InferenceEvent) -> None:
        self._call("on_inference_start", event)

    def inference_ended(self, event: InferenceEvent) -> None:
        self._call("on_inference_end", event)
