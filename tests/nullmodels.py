"""Manifests for the null backend, written straight into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferrousforge.schema import ModelMetadata
from ferrousforge.store.manifest import Manifest
from ferrousforge.store.store import Store


def add_null_model(
    home: Path, name: str, behaviour: dict[str, Any], template: str | None = None
) -> Manifest:
    """Register a null-backend model whose behaviour comes from ``behaviour``, with
    ``template`` as its chat template (which decides its thinking and tool-call markup)."""
    manifest = Manifest(
        name=name,
        source="test",
        format="null",
        path=str(home),
        managed=False,
        sha256="0" * 64,
        size=0,
        metadata=ModelMetadata(name=name, extra=behaviour, chat_template=template),
    )
    Store(home).save(manifest)
    return manifest
