"""Remote engines: a running engine (``forge serve``, the Jupyter server extension, a hub
service) behind the ``EngineClient`` and ``AsyncEngineClient`` protocols, over its HTTP API.

Both speak the same wire (``remote_wire.py``): streams always, so a closed iterator closes
the connection and stops the generation there; errors come back as the server's exception
classes with their fields; a stream that ends without its last line raises.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import httpx

from .errors import ConfigError, EngineUnreachable
from .interface import ChunkStream, KeepAlive, LoadedModel, Messages, Options, Tools
from .mold import Backend, Device
from .progress import Progress, ProgressCallback, ignore
from .ranking import Ranking
from .remote_wire import (
    Lines,
    chat_body,
    check,
    chunks_of,
    device_of,
    embed_body,
    embedded,
    generate_body,
    infer_call,
    inferred,
    load_body,
    needs_specs,
    pull_body,
    pulled,
    raise_for,
    rerank_body,
    reranked,
)
from .schema import Chunk, Format, Result, result_of
from .store.manifest import Manifest

__all__ = ["AsyncRemoteEngine", "RemoteEngine"]


class RemoteEngine:
    """The blocking engine over HTTP. ``stream=True`` yields Chunks as they come; closing
    the iterator closes the connection, which stops the generation there."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models and devices ----------------------------------------------------------

    def list(self) -> builtins.list[Manifest]:
        return [Manifest.model_validate(m) for m in self._json("GET", "/api/forge/models")]

    def show(self, model: str) -> Manifest:
        return Manifest.model_validate(self._json("POST", "/api/forge/manifest", {"model": model}))

    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        force: bool = False,
    ) -> Manifest:
        """Pull on the server. A local file or folder is sent as its absolute path: the
        server shares this machine, not this process's working folder."""
        body = pull_body(spec, name, sha256, force)
        return pulled(self._lines("POST", "/api/forge/pull", body), progress)

    def rm(self, model: str) -> None:
        self._json("DELETE", "/api/delete", {"model": model}, empty=True)

    def cp(self, source: str, destination: str) -> Manifest:
        body = {"source": source, "destination": destination}
        self._json("POST", "/api/copy", body, empty=True)
        return self.show(destination)

    def load(
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
        """Load on the server (a conversion there reports no progress here)."""
        progress(Progress(f"loading {model} on {self.url}"))
        body = load_body(model, backend, device, gpu_layers, num_ctx, keep_alive, parallel)
        return LoadedModel(**self._json("POST", "/api/forge/load", body))

    def unload(self, model: str) -> bool:
        return bool(self._json("POST", "/api/forge/unload", {"model": model})["unloaded"])

    def ps(self) -> builtins.list[LoadedModel]:
        return [LoadedModel(**m) for m in self._json("GET", "/api/forge/loaded")]

    def devices(self) -> builtins.list[Device]:
        return [device_of(d) for d in self._json("GET", "/api/forge/devices")]

    # -- inference -------------------------------------------------------------------

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
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        stream: bool = False,
        system: str | None = None,
        raw: bool = False,
        format: Format = None,
        think: bool | None = None,
        context: builtins.list[int] | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> Result | ChunkStream:
        body = generate_body(
            model, prompt, system, raw, format, context, options, keep_alive, think
        )
        chunks = chunks_of(self._lines("POST", "/api/generate", body), "response")
        return chunks if stream else _collected(chunks)

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
    def chat(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool = False,
        tools: Tools = None,
        format: Format = None,
        think: bool | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> Result | ChunkStream:
        body = chat_body(model, messages, tools, format, options, keep_alive, think)
        chunks = chunks_of(self._lines("POST", "/api/chat", body), "message")
        return chunks if stream else _collected(chunks)

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result:
        body = embed_body(model, input, truncate, keep_alive)
        return embedded(self._json("POST", "/api/embed", body))

    def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking:
        body = rerank_body(model, query, documents, top_n, keep_alive)
        return reranked(self._json("POST", "/api/rerank", body), documents)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result:
        specs = self.show(model).metadata.input_shapes if needs_specs(inputs) else []
        path, body, headers = infer_call(model, inputs, outputs, keep_alive, specs)
        try:
            return inferred(self._http.post(path, content=body, headers=headers))
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None

    def tokenize(self, model: str, text: str) -> builtins.list[int]:
        body = {"model": model, "text": text}
        return builtins.list(self._json("POST", "/api/forge/tokenize", body)["tokens"])

    def detokenize(self, model: str, ids: Sequence[int]) -> str:
        body = {"model": model, "tokens": builtins.list(ids)}
        return str(self._json("POST", "/api/forge/detokenize", body)["text"])

    def register(self, model: object, **kw: Any) -> Backend:
        """A custom model cannot travel to the engine's process: raises, saying so."""
        from .backends.custom import elsewhere

        raise ConfigError(elsewhere(self.url))

    # -- HTTP ------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Any = None, *, empty: bool = False) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None
        raise_for(r)
        return None if empty else r.json()

    def _lines(self, method: str, path: str, body: Any) -> Lines:
        try:
            with self._http.stream(method, path, json=body) as r:
                if r.is_error:
                    r.read()
                    raise_for(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield check(line)
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None


def _collected(chunks: Iterator[Chunk]) -> Result:
    return result_of(list(chunks))


from .async_client import AsyncRemoteEngine  # noqa: E402  (re-exported here)
