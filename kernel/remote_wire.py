"""The wire the remote engines speak, shared by the blocking and the async one: request
bodies from the engine's keywords, Chunks and Results from NDJSON lines, and errors as the
server's own exception classes (``errors.rebuild``)."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .errors import EngineUnreachable, ForgeError, rebuild
from .inference_wire import HEADER, decode_response, encode_request
from .interface import KeepAlive, Messages, Options, Tools
from .mold import Device
from .progress import Progress, ProgressCallback
from .ranking import Ranked, Ranking
from .schema import Chunk, Format, Message, Result, Stats, ToolCallDelta, options_of
from .store.manifest import Manifest
from .tensors import TensorSpec, as_array

Lines = Iterator[dict[str, Any]]


def generate_body(
    model: str,
    prompt: str,
    system: str | None,
    raw: bool,
    format: Format,
    context: list[int] | None,
    options: Options,
    keep_alive: KeepAlive,
    think: bool | None = None,
) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "system": system,
        "raw": raw,
        "format": format,
        "think": think,
        "context": context,
        "options": _options(options),
        "keep_alive": keep_alive,
        "stream": True,
    }


def chat_body(
    model: str,
    messages: Messages,
    tools: Tools,
    format: Format,
    options: Options,
    keep_alive: KeepAlive,
    think: bool | None = None,
) -> dict[str, Any]:
    msgs = [m if isinstance(m, Message) else Message(**m) for m in messages]
    return {
        "model": model,
        "messages": [m.model_dump(exclude_none=True) for m in msgs],
        "tools": tools,
        "format": format,
        "think": think,
        "options": _options(options),
        "keep_alive": keep_alive,
        "stream": True,
    }


def load_body(
    model: str,
    backend: str | None,
    device: str | None,
    gpu_layers: int | None,
    num_ctx: int | None,
    keep_alive: KeepAlive,
    parallel: int | None,
) -> dict[str, Any]:
    return {
        "model": model,
        "backend": backend,
        "device": device,
        "gpu_layers": gpu_layers,
        "num_ctx": num_ctx,
        "keep_alive": keep_alive,
        "parallel": parallel,
    }


def embed_body(
    model: str, input: str | Sequence[str], truncate: bool, keep_alive: KeepAlive
) -> dict[str, Any]:
    texts = input if isinstance(input, str) else list(input)
    return {"model": model, "input": texts, "truncate": truncate, "keep_alive": keep_alive}


def rerank_body(
    model: str,
    query: str,
    documents: Sequence[str],
    top_n: int | None,
    keep_alive: KeepAlive,
) -> dict[str, Any]:
    return {
        "model": model,
        "query": query,
        "documents": list(documents),
        "top_n": top_n,
        "keep_alive": keep_alive,
    }


def reranked(reply: dict[str, Any], documents: Sequence[str]) -> Ranking:
    """``/api/rerank``'s answer; the texts come from ``documents``, by index."""
    docs = list(documents)
    results = [
        Ranked(int(r["index"]), float(r["relevance_score"]), docs[int(r["index"])])
        for r in reply["results"]
    ]
    tokens = int(reply.get("usage", {}).get("prompt_tokens", 0))
    return Ranking(results, reply["scoring"], Stats(prompt_eval_count=tokens))


def _options(options: Options) -> dict[str, Any]:
    return options_of(options).model_dump(exclude_none=True, exclude_defaults=True)


def pull_body(spec: str, name: str | None, sha256: str | None, force: bool) -> dict[str, Any]:
    """A local file or folder goes as its absolute path: the server shares this machine,
    not this process's working folder."""
    try:
        local = Path(spec).expanduser()
        path = str(local.resolve()) if local.exists() else None
    except (ValueError, OSError, RuntimeError):  # no file name: the server says so
        path = None
    return {"model": path or spec, "name": name, "sha256": sha256, "force": force}


def progress_of(item: dict[str, Any]) -> Progress:
    return Progress(item.get("status", ""), item.get("total"), item.get("completed"))


def final_manifest(item: dict[str, Any]) -> Manifest | None:
    """The stored manifest, on a pull's last line."""
    found = item.get("manifest") if item.get("status") == "success" else None
    return Manifest.model_validate(found) if found is not None else None


def pulled(lines: Lines, progress: ProgressCallback) -> Manifest:
    for item in lines:
        progress(progress_of(item))
        if (m := final_manifest(item)) is not None:
            return m
    raise unfinished("pull")


def chunk_of(item: dict[str, Any], key: str) -> Chunk:
    """One line of ``/api/generate`` (``key`` "response") or ``/api/chat`` ("message")."""
    value = item.get(key, "")
    text = value.get("content", "") if isinstance(value, dict) else value
    thinking = value.get("thinking") if isinstance(value, dict) else item.get("thinking")
    calls = value.get("tool_calls") if isinstance(value, dict) else None
    if not item.get("done"):
        # Ollama sends each tool call whole, on the item where it ended
        call = ToolCallDelta(0, call=calls[0]) if calls else None
        return Chunk(text, thinking=thinking or "", call=call)
    return Chunk(
        text,
        True,
        item.get("done_reason"),
        Stats(**_stats_of(item)),
        item.get("context"),
        calls or None,
        thinking or "",
    )


def chunks_of(lines: Lines, key: str) -> Generator[Chunk, None, None]:
    calls = CallsSeen()
    for item in lines:
        c = calls.see(chunk_of(item, key))
        yield c
        if c.done:
            return
    raise unfinished("stream")


class CallsSeen:
    """Ollama's stream sends each tool call on the item where it ended; the engine's last
    chunk lists them all, so a remote stream's last chunk does too."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def see(self, c: Chunk) -> Chunk:
        if c.call is not None and c.call.call is not None:
            c.call.index = len(self.calls)
            self.calls.append(c.call.call)
        if c.done and self.calls and not c.tool_calls:
            c.tool_calls = self.calls
        return c


def unfinished(what: str) -> EngineUnreachable:
    return EngineUnreachable(f"the engine's {what} ended before its last line")


def embedded(reply: dict[str, Any]) -> Result:
    return Result(embeddings=reply["embeddings"], stats=Stats(**_stats_of(reply)))


def needs_specs(inputs: Mapping[str, Any]) -> bool:
    """Whether some input is not an array yet: its datatype comes from the model's specs."""
    return not all(hasattr(v, "dtype") and hasattr(v, "shape") for v in inputs.values())


def infer_call(
    model: str,
    inputs: Mapping[str, Any],
    outputs: Sequence[str] | None,
    keep_alive: KeepAlive,
    specs: Sequence[TensorSpec] = (),
) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and headers of an Open Inference Protocol infer call, its tensors in
    binary; nested lists become arrays of their input's datatype."""
    by_name = {s.name: s for s in specs}
    arrays = {k: as_array(v, by_name.get(k), k) for k, v in inputs.items()}
    wanted = list(outputs) if outputs is not None else None
    parameters = {} if keep_alive is None else {"keep_alive": keep_alive}
    body, length = encode_request(arrays, wanted, parameters=parameters)
    headers = {HEADER: str(length), "Content-Type": "application/octet-stream"}
    return f"/v2/models/{quote(model, safe='/:')}/infer", body, headers


def inferred(r: httpx.Response) -> Result:
    """The Result of an infer call's answer (its ``tensors``)."""
    raise_for(r)
    length = r.headers.get(HEADER)
    return Result(tensors=decode_response(r.content, int(length) if length else None))


def device_of(d: dict[str, Any]) -> Device:
    return Device(**{**d, "backends": tuple(d["backends"])})


def _stats_of(item: dict[str, Any]) -> dict[str, int]:
    return {f: int(item[f]) for f in Stats.__dataclass_fields__ if isinstance(item.get(f), int)}


def check(line: str) -> dict[str, Any]:
    """One NDJSON line, raising the error it carries (an error after the stream began)."""
    try:
        item = json.loads(line)
    except ValueError:
        raise EngineUnreachable(f"the engine sent a line that is not JSON: {line[:80]!r}") from None
    if not isinstance(item, dict):
        raise EngineUnreachable(f"the engine sent a line that is not an object: {line[:80]!r}")
    if "error" in item:
        raise _error_of(item, 0)
    return item


def raise_for(r: httpx.Response) -> None:
    """Raise the error an answer carries, as the server's own class when it names one."""
    if not r.is_error:
        return
    try:
        data = r.json()
    except ValueError:
        data = {"error": r.text or r.reason_phrase}
    raise _error_of(data if isinstance(data, dict) else {"error": str(data)}, r.status_code)


def _error_of(data: dict[str, Any], status: int) -> ForgeError:
    message = data.get("error") or ""
    if isinstance(message, dict):  # OpenAI-shaped
        message = message.get("message", str(message))
    return rebuild(str(message), status, data.get("type"), data.get("fields"))
