"""``AsyncRemoteEngine``: the ``AsyncEngineClient`` protocol over HTTP, for code on an
event loop. The same wire, errors and checks as ``RemoteEngine`` (``remote_wire.py``)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from .errors import EngineUnreachable
from .interface import KeepAlive, LoadedModel, Messages, Options, Tools
from .mold import Device
from .progress import Progress, ProgressCallback, ignore
from .ranking import Ranking
from .remote_wire import (
    CallsSeen,
    chat_body,
    check,
    chunk_of,
    device_of,
    embed_body,
    embedded,
    final_manifest,
    generate_body,
    infer_call,
    inferred,
    load_body,
    needs_specs,
    progress_of,
    pull_body,
    raise_for,
    rerank_body,
    reranked,
    unfinished,
)
from .schema import Chunk, Format, Result, result_of
from .store.manifest import Manifest


class AsyncRemoteEngine:
    """The async engine over HTTP, for code on an event loop (a hub service's clients, an
    async notebook cell). The same wire, errors and checks as ``RemoteEngine``."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRemoteEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def list(self) -> builtins.list[Manifest]:
        found = await self._json("GET", "/api/forge/models")
        return [Manifest.model_validate(m) for m in found]

    async def show(self, model: str) -> Manifest:
        found = await self._json("POST", "/api/forge/manifest", {"model": model})
        return Manifest.model_validate(found)

    async def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        force: bool = False,
    ) -> Manifest:
        """Pull on the server (a local path is sent as its absolute path)."""
        lines = self._lines("POST", "/api/forge/pull", pull_body(spec, name, sha256, force))
        async with contextlib.aclosing(lines):
            async for item in lines:
                progress(progress_of(item))
                if (m := final_manifest(item)) is not None:
                    return m
        raise unfinished("pull")

    async def rm(self, model: str) -> None:
        await self._json("DELETE", "/api/delete", {"model": model}, empty=True)

    async def cp(self, source: str, destination: str) -> Manifest:
        body = {"source": source, "destination": destination}
        await self._json("POST", "/api/copy", body, empty=True)
        return await self.show(destination)

    async def load(
        self,
        model: str,
        *,
        backend: str | None = None,
        device: str | None = None,
        gpu_layers: int | None = None,
        num_ctx: int | None = None,
        keep_alive: KeepAlive = None,
        progress: ProgressCallback = ignore,
        parallel: int | None = None,
    ) -> LoadedModel:
        progress(Progress(f"loading {model} on {self.url}"))
        body = load_body(model, backend, device, gpu_layers, num_ctx, keep_alive, parallel)
        return LoadedModel(**await self._json("POST", "/api/forge/load", body))

    async def unload(self, model: str) -> bool:
        return bool((await self._json("POST", "/api/forge/unload", {"model": model}))["unloaded"])

    async def ps(self) -> builtins.list[LoadedModel]:
        return [LoadedModel(**m) for m in await self._json("GET", "/api/forge/loaded")]

    async def devices(self) -> builtins.list[Device]:
        return [device_of(d) for d in await self._json("GET", "/api/forge/devices")]

    async def generate_stream(
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
    ) -> AsyncIterator[Chunk]:
        body = generate_body(
            model, prompt, system, raw, format, context, options, keep_alive, think
        )
        async for c in _achunks(self._lines("POST", "/api/generate", body), "response"):
            yield c

    async def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        tools: Tools = None,
        format: Format = None,
        think: bool | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> AsyncIterator[Chunk]:
        body = chat_body(model, messages, tools, format, options, keep_alive, think)
        async for c in _achunks(self._lines("POST", "/api/chat", body), "message"):
            yield c

    async def generate(self, model: str, prompt: str, **kw: Any) -> Result:
        return await _acollected(self.generate_stream(model, prompt, **kw))

    async def chat(self, model: str, messages: Messages, **kw: Any) -> Result:
        return await _acollected(self.chat_stream(model, messages, **kw))

    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result:
        body = embed_body(model, input, truncate, keep_alive)
        return embedded(await self._json("POST", "/api/embed", body))

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking:
        body = rerank_body(model, query, documents, top_n, keep_alive)
        reply = await self._json("POST", "/api/rerank", body)
        return reranked(reply, documents)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result:
        specs = (await self.show(model)).metadata.input_shapes if needs_specs(inputs) else []
        path, body, headers = infer_call(model, inputs, outputs, keep_alive, specs)
        try:
            return inferred(await self._http.post(path, content=body, headers=headers))
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None

    async def tokenize(self, model: str, text: str) -> builtins.list[int]:
        body = {"model": model, "text": text}
        return builtins.list((await self._json("POST", "/api/forge/tokenize", body))["tokens"])

    async def detokenize(self, model: str, ids: Sequence[int]) -> str:
        body = {"model": model, "tokens": builtins.list(ids)}
        return str((await self._json("POST", "/api/forge/detokenize", body))["text"])

    async def _json(self, method: str, path: str, body: Any = None, *, empty: bool = False) -> Any:
        try:
            r = await self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None
        raise_for(r)
        return None if empty else r.json()

    async def _lines(
        self, method: str, path: str, body: Any
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with self._http.stream(method, path, json=body) as r:
                if r.is_error:
                    await r.aread()
                    raise_for(r)
                async for line in r.aiter_lines():
                    if line.strip():
                        yield check(line)
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None


async def _achunks(lines: AsyncGenerator[dict[str, Any], None], key: str) -> AsyncIterator[Chunk]:
    calls = CallsSeen()
    async with contextlib.aclosing(lines):
        async for item in lines:
            c = calls.see(chunk_of(item, key))
            yield c
            if c.done:
                return
    raise unfinished("stream")


async def _acollected(chunks: AsyncIterator[Chunk]) -> Result:
    return result_of([c async for c in chunks])
