"""What clients use of an engine, as typed Protocols: one for blocking callers (scripts, the
CLI, notebooks, widgets) and one for async ones. The in-process engines (``Engine``,
``AsyncEngine``) and the remote ones (``RemoteEngine``, ``AsyncRemoteEngine``) implement
them with the same keywords, results and exception classes; ``tests/test_conformance.py``
runs one suite against all of them. A keyword an implementation cannot honour raises.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload, runtime_checkable

from .mold import Device
from .progress import ProgressCallback
from .ranking import Ranking
from .schema import Chunk, Format, InferenceOptions, Message, Result
from .store.manifest import Manifest

KeepAlive = str | float | int | None
Messages = Sequence[Message | Mapping[str, Any]]
Options = InferenceOptions | Mapping[str, Any] | None
Tools = list[dict[str, Any]] | None
ChunkStream = Generator[Chunk, None, None]  # close() it to stop the generation


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One row of ``ps``."""

    name: str
    backend: str
    device: str
    memory: int
    context_length: int
    expires_in: float | None  # seconds; None while in use or kept forever
    in_use: int  # requests holding it, running or waiting for a slot
    slots: int = 1  # requests it serves at once
    running: int = 0  # sequences in its batches now
    kv_used: int = 0  # KV cells the running sequences hold (llama.cpp)
    kv_cached: int = 0  # KV cells kept for finished requests' prompts
    kv_total: int = 0


@runtime_checkable
class EngineClient(Protocol):
    """The blocking engine: ``ferrousforge.Engine`` and ``ferrousforge.client.RemoteEngine``.

    ``generate`` and ``chat`` return a Result, or with ``stream=True`` an iterator of Chunks
    whose closing stops the generation.
    """

    def list(self) -> builtins.list[Manifest]: ...
    def show(self, model: str) -> Manifest: ...
    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ...,
        force: bool = False,
    ) -> Manifest: ...
    def rm(self, model: str) -> None: ...
    def cp(self, source: str, destination: str) -> Manifest: ...
    def load(
        self,
        model: str,
        *,
        backend: str | None = None,
        device: str | None = None,
        gpu_layers: int | None = None,
        num_ctx: int | None = None,
        keep_alive: KeepAlive = None,
        progress: ProgressCallback = ...,
        parallel: int | None = None,
    ) -> LoadedModel: ...
    def unload(self, model: str) -> bool: ...
    def ps(self) -> builtins.list[LoadedModel]: ...
    def devices(self) -> builtins.list[Device]: ...
    @overload
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        stream: Literal[False] = ...,
        system: str | None = ...,
        raw: bool = ...,
        format: Format = ...,
        think: bool | None = ...,
        context: builtins.list[int] | None = ...,
        options: Options = ...,
        keep_alive: KeepAlive = ...,
    ) -> Result: ...
    @overload
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        stream: Literal[True],
        system: str | None = ...,
        raw: bool = ...,
        format: Format = ...,
        think: bool | None = ...,
        context: builtins.list[int] | None = ...,
        options: Options = ...,
        keep_alive: KeepAlive = ...,
    ) -> ChunkStream: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Messages,
        *,
        stream: Literal[False] = ...,
        tools: Tools = ...,
        format: Format = ...,
        think: bool | None = ...,
        options: Options = ...,
        keep_alive: KeepAlive = ...,
    ) -> Result: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Messages,
        *,
        stream: Literal[True],
        tools: Tools = ...,
        format: Format = ...,
        think: bool | None = ...,
        options: Options = ...,
        keep_alive: KeepAlive = ...,
    ) -> ChunkStream: ...
    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking: ...
    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    def tokenize(self, model: str, text: str) -> builtins.list[int]: ...
    def detokenize(self, model: str, ids: Sequence[int]) -> str: ...
    def close(self) -> None: ...


@runtime_checkable
class AsyncEngineClient(Protocol):
    """The async engine: ``ferrousforge.AsyncEngine`` and ``ferrousforge.client.AsyncRemoteEngine``.

    ``generate_stream`` and ``chat_stream`` yield Chunks; closing one stops the generation.
    """

    async def list(self) -> builtins.list[Manifest]: ...
    async def show(self, model: str) -> Manifest: ...
    async def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ...,
        force: bool = False,
    ) -> Manifest: ...
    async def rm(self, model: str) -> None: ...
    async def cp(self, source: str, destination: str) -> Manifest: ...
    async def load(
        self,
        model: str,
        *,
        backend: str | None = None,
        device: str | None = None,
        gpu_layers: int | None = None,
        num_ctx: int | None = None,
        keep_alive: KeepAlive = None,
        progress: ProgressCallback = ...,
        parallel: int | None = None,
    ) -> LoadedModel: ...
    async def unload(self, model: str) -> bool: ...
    async def ps(self) -> builtins.list[LoadedModel]: ...
    async def devices(self) -> builtins.list[Device]: ...
    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: Format = None,
        think: bool | None = None,
        context: builtins.list[int] | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: Format = None,
        think: bool | None = None,
        context: builtins.list[int] | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> AsyncIterator[Chunk]: ...
    async def chat(
        self,
        model: str,
        messages: Messages,
        *,
        tools: Tools = None,
        format: Format = None,
        think: bool | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        tools: Tools = None,
        format: Format = None,
        think: bool | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> AsyncIterator[Chunk]: ...
    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking: ...
    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result: ...
    async def tokenize(self, model: str, text: str) -> builtins.list[int]: ...
    async def detokenize(self, model: str, ids: Sequence[int]) -> str: ...
    async def close(self) -> None: ...
