"""The Mold and Backend protocols (seed §2.1-§2.2): one loaded model, and what makes one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from .config import Settings
from .schema import ChatRequest, Chunk, GenerateRequest, ModelMetadata, Request, Result
from .store.manifest import Manifest


@dataclass(frozen=True, slots=True)
class Device:
    """A compute device some installed runtime can really use."""

    id: str  # "cpu", "cuda:0", "metal:0", "vulkan:0"
    name: str = ""
    memory_total: int | None = None  # bytes
    memory_free: int | None = None
    backends: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.id.split(":", 1)[0]


@dataclass(slots=True)
class LoadOptions:
    """How to load: overrides for the automatic backend/device choice and runtime knobs."""

    backend: str | None = None
    device: str | None = None
    gpu_layers: int | None = None  # None: all layers on a GPU device, none on cpu
    num_ctx: int | None = None
    threads: int | None = None
    parallel: int | None = None  # requests at once, for a Mold that batches; None: its default
    cache_dir: Path | None = None  # where a backend keeps what it compiles (the store's cache/)
    # The engine's settings: each backend reads its own knobs there (onnx_optimization, ...).
    settings: Settings = field(default_factory=Settings)


@dataclass(slots=True)
class Occupancy:
    """How busy a Mold is, for ``ps`` and ``/metrics``. One that batches (``"batch"`` in its
    tasks) serves ``slots`` requests at once; the last four fields are counters."""

    slots: int = 1
    running: int = 0  # sequences or requests in its batches now
    kv_used: int = 0  # KV cells the running sequences hold
    kv_cached: int = 0  # KV cells kept for the prompts of finished requests
    kv_total: int = 0
    batches: int = 0  # decode steps or forward passes run
    widths: dict[int, int] = field(default_factory=dict)  # batches by requests carried
    cache_hits: int = 0  # requests that reused a cached prompt prefix
    cached_tokens: int = 0  # prompt tokens those did not evaluate again


@runtime_checkable
class Mold(Protocol):
    """One model loaded on one backend and device. Capabilities are data (``tasks``)."""

    name: str
    backend: str
    device: str
    tasks: frozenset[str]  # {"generate", "chat", "embed", "rerank", "infer", "tokenize", "batch"}
    metadata: ModelMetadata
    context_length: int
    memory: int  # bytes this instance holds, estimated before load and measured after

    async def load(self) -> None: ...
    async def unload(self) -> None: ...
    async def infer(self, req: Request) -> Result: ...
    def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]: ...
    # prompt: the tokens a prompt of this text is read as (with a BOS the model adds)
    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]: ...
    async def detokenize(self, ids: Sequence[int]) -> str: ...
    def occupancy(self) -> Occupancy: ...


class Backend(Protocol):
    """A runtime. One module each, found through the ``ferrousforge.backends`` entry points."""

    name: str
    formats: frozenset[str]

    def available(self) -> bool: ...
    def devices(self) -> list[Device]: ...
    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int: ...
    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold: ...
