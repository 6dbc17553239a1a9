"""Load options, built in one place: the engine's settings give the defaults once, a
``load()`` overrides some of them, and a request's ``num_ctx`` may ask for more context."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .config import Settings
from .mold import LoadOptions
from .store.manifest import Manifest


def default_options(settings: Settings, cache_dir: Path) -> LoadOptions:
    """What every load starts from: the settings' backend, device, context and threads."""
    return LoadOptions(
        backend=settings.backend,
        device=settings.device,
        num_ctx=settings.num_ctx,
        threads=settings.threads,
        parallel=settings.num_parallel,
        cache_dir=cache_dir,
        settings=settings,
    )


def overridden(
    base: LoadOptions,
    *,
    backend: str | None = None,
    device: str | None = None,
    gpu_layers: int | None = None,
    num_ctx: int | None = None,
    parallel: int | None = None,
) -> LoadOptions:
    """``base`` with what a caller set (None keeps the default)."""
    return replace(
        base,
        backend=backend or base.backend,
        device=device or base.device,
        gpu_layers=gpu_layers if gpu_layers is not None else base.gpu_layers,
        num_ctx=num_ctx or base.num_ctx,
        parallel=parallel or base.parallel,
    )


def model_defaults(base: LoadOptions, settings: Settings, model: str) -> LoadOptions:
    """``base`` with the model's own settings (``model_parallel``)."""
    parallel = settings.model_parallel.get(model)
    return replace(base, parallel=parallel) if parallel else base


def grows(manifest: Manifest, loaded: int, wanted: int) -> bool:
    """Whether ``wanted`` tokens of context exceed what is loaded and the model could hold."""
    trained = manifest.metadata.context_size
    return wanted > loaded and (trained is None or loaded < trained)
