"""``RemoteEngine``: a running engine (``forge serve``, the Jupyter server extension, a hub
service) behind the same methods as ``ferrousforge.Engine``, over its HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .engine import LoadedModel
from .errors import (
    ForgeError,
    InvalidModelFile,
    ModelNotFound,
    QueueFull,
    RequestError,
    Unauthorized,
)
from .mold import Device
from .progress import Progress, ProgressCallback, ignore
from .schema import Chunk, Result, Stats
from .store.manifest import Manifest

_BY_STATUS: dict[int, type[ForgeError]] = {
    400: RequestError,
    401: Unauthorized,
    403: Unauthorized,
    422: InvalidModelFile,
    503: QueueFull,
}


class EngineUnreachable(ForgeError):
    status = 503


class RemoteEngine:
    """The blocking Engine interface over HTTP. ``stream=True`` yields Chunks as they come;
    closing the iterator closes the connection, which stops the generation there."""

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

    # -- models and devices --------------------------------------------------------

    def show(self, model: str) -> Manifest:
        return Manifest.model_validate(self._json("POST", "/api/forge/manifest", {"model": model}))

    def ps(self) -> list[LoadedModel]:
        return [LoadedModel(**m) for m in self._json("GET", "/api/forge/loaded")]

    def devices(self) -> list[Device]:
        found = self._json("GET", "/api/forge/devices")
        return [Device(**{**d, "backends": tuple(d["backends"])}) for d in found]

    def load(
        self,
        model: str,
        *,
        backend: str | None = None,
        device: str | None = None,
        keep_alive: str | float | None = None,
    ) -> LoadedModel:
        body = {"model": model, "backend": backend, "device": device, "keep_alive": keep_alive}
        return LoadedModel(**self._json("POST", "/api/forge/load", body))

    def unload(self, model: str) -> bool:
        reply = self._json("POST", "/api/generate", {"model": model, "keep_alive": 0})
        return bool(reply.get("done_reason") == "unload")

    def pull(self, spec: str, *, progress: ProgressCallback = ignore, **_: Any) -> Manifest:
        """Pull on the server. A local file or folder is sent as its absolute path: the server
        shares this machine, not this process's working folder."""
        try:
            local = Path(spec).expanduser()
            path = str(local.resolve()) if local.exists() else None
        except (ValueError, OSError, RuntimeError):  # no file name: the server says so
            path = None
        stored = spec
        for item in self._lines("POST", "/api/pull", {"model": path or spec, "stream": True}):
            progress(Progress(item.get("status", ""), item.get("total"), item.get("completed")))
            stored = item.get("model") or stored  # the last item names what was stored
        return self.show(stored)

    # -- inference -------------------------------------------------------------------

    def generate(self, model: str, prompt: str, *, stream: bool = False, **kw: Any) -> Any:
        body = {"model": model, "prompt": prompt, **_fields(kw)}
        chunks = self._chunks("/api/generate", body, "response")
        return chunks if stream else _collected(chunks)

    def chat(self, model: str, messages: Any, *, stream: bool = False, **kw: Any) -> Any:
        body = {"model": model, "messages": list(messages), **_fields(kw)}
        chunks = self._chunks("/api/chat", body, "message")
        return chunks if stream else _collected(chunks)

    def embed(self, model: str, input: str | list[str], **kw: Any) -> Result:
        body = {"model": model, "input": input, **_fields(kw)}
        reply = self._json("POST", "/api/embed", body)
        return Result(embeddings=reply["embeddings"], stats=Stats(**_stats_of(reply)))

    def list(self) -> list[Manifest]:  # last: inside the class, ``list`` means this method
        return [Manifest.model_validate(m) for m in self._json("GET", "/api/forge/models")]

    # -- HTTP --------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None
        _raise_for(r)
        return r.json()

    def _lines(self, method: str, path: str, body: Any) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream(method, path, json=body) as r:
                if r.is_error:
                    r.read()
                    _raise_for(r)
                for line in r.iter_lines():
                    if line.strip():
                        item = json.loads(line)
                        if "error" in item:  # an error after the stream began
                            raise ForgeError(item["error"])
                        yield item
        except httpx.TransportError as e:
            raise EngineUnreachable(f"engine at {self.url} is unreachable: {e}") from None

    def _chunks(self, path: str, body: dict[str, Any], key: str) -> Iterator[Chunk]:
        for item in self._lines("POST", path, {**body, "stream": True}):
            value = item.get(key, "")
            text = value.get("content", "") if isinstance(value, dict) else value
            done = bool(item.get("done"))
            stats = Stats(**_stats_of(item)) if done else None
            yield Chunk(text, done, item.get("done_reason") if done else None, stats)


def _fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Engine keywords to request fields (``load`` options have no HTTP form: use load())."""
    return {k: v for k, v in kw.items() if v is not None and k != "load"}


def _stats_of(item: dict[str, Any]) -> dict[str, int]:
    return {f: int(item[f]) for f in Stats.__dataclass_fields__ if isinstance(item.get(f), int)}


def _collected(chunks: Iterator[Chunk]) -> Result:
    parts, last = [], Chunk()
    for c in chunks:
        parts.append(c.text)
        last = c
    return Result(text="".join(parts), done_reason=last.done_reason, stats=last.stats or Stats())


def _raise_for(r: httpx.Response) -> None:
    if not r.is_error:
        return
    try:
        message = r.json().get("error") or r.text
    except ValueError:
        message = r.text or r.reason_phrase
    if isinstance(message, dict):  # OpenAI-shaped
        message = message.get("message", str(message))
    cls = ModelNotFound if r.status_code == 404 else _BY_STATUS.get(r.status_code, ForgeError)
    err = cls.__new__(cls)  # the server's one-line message as is, whatever cls.__init__ takes
    Exception.__init__(err, str(message))
    raise err
