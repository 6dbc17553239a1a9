"""FerrousForge: run ML models locally through one engine.

import ferrousforge as ff
with ff.Engine() as engine:
    engine.pull("smollm2:135m")
    print(engine.chat("smollm2:135m", [{"role": "user", "content": "Hi!"}]).text)
"""

from __future__ import annotations

from collections.abc import Sequence

from .backends.custom import CustomBackend, CustomModel
from .config import Settings, load_settings
from .engine import AsyncEngine, LoadedModel
from .errors import (
    ConfigError,
    ContextOverflow,
    ForgeError,
    InferenceError,
    InsufficientMemory,
    ModelError,
    ModelNotFound,
    ModelNotLoaded,
    StorageError,
    UnsupportedFormat,
)
from .mold import Backend, Device, LoadOptions, Mold
from .ranking import Ranked, Ranking
from .schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    GenerateRequest,
    InferenceOptions,
    Message,
    ModelMetadata,
    ModelRequirements,
    Result,
    Stats,
)
from .sync_engine import Engine

__version__ = "0.1.0"


def register(
    model: object, *, name: str | None = None, models: Sequence[str] | None = None
) -> Backend:
    """Serve a custom model (a ``CustomModel`` class, any class or object with embed,
    generate or chat methods, or a Backend) in the notebook kernel's in-process engine
    (``notebook.shared()``); a remote engine says in one line that it cannot. Elsewhere:
    ``Engine.register``, or a plugin package's ``ferrousforge.backends`` entry point."""
    from .notebook import register as add

    return add(model, name=name, models=models)


def load_ipython_extension(shell: object) -> None:
    """``%load_ext ferrousforge``: the ``%forge`` and ``%%forge`` magics."""
    from .notebook.magics import load_ipython_extension as load

    load(shell)


__all__ = [
    "AsyncEngine",
    "Backend",
    "ChatRequest",
    "Chunk",
    "ConfigError",
    "ContextOverflow",
    "CustomBackend",
    "CustomModel",
    "Device",
    "EmbedRequest",
    "Engine",
    "ForgeError",
    "GenerateRequest",
    "InferenceError",
    "InferenceOptions",
    "InsufficientMemory",
    "LoadOptions",
    "LoadedModel",
    "Message",
    "ModelError",
    "ModelMetadata",
    "ModelNotFound",
    "ModelNotLoaded",
    "ModelRequirements",
    "Mold",
    "Ranked",
    "Ranking",
    "Result",
    "Settings",
    "Stats",
    "StorageError",
    "UnsupportedFormat",
    "__version__",
    "load_settings",
    "register",
]
