"""Ollama's API (docs/api.md): NDJSON streams, nanosecond durations, the same field names."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field, field_validator

from .. import __version__
from ..errors import RequestError
from ..schema import (
    Body,
    ChatRequest,
    Chunk,
    GenerateRequest,
    InferenceOptions,
    Message,
    Stats,
)
from . import docs
from .common import details, engine_of, iso, now_iso, primed, within
from .pulling import pulled
from .streaming import ndjson

router = APIRouter(tags=["ollama"])
KeepAlive = str | float | int | None


class _Body(Body):
    model: str = Field(min_length=1)
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None

    @field_validator("options")
    @classmethod
    def _checked(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        InferenceOptions.model_validate(v or {})
        return v

    def inference_options(self) -> InferenceOptions:
        return InferenceOptions.model_validate(self.options or {})


FormatField = Literal["json", ""] | dict[str, Any] | None
# gpt-oss style levels ask for thinking too
ThinkField = bool | Literal["low", "medium", "high"] | None


def _think(value: ThinkField) -> bool | None:
    return value if value is None or isinstance(value, bool) else True


class GenerateBody(_Body):
    prompt: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    format: FormatField = None
    stream: bool = True
    raw: bool = False
    think: ThinkField = None


class ChatMessage(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: FormatField = None
    stream: bool = True
    think: ThinkField = None


class EmbedBody(_Body):
    input: str | list[str]
    truncate: bool = True


class EmbeddingsBody(_Body):
    prompt: str


class NameBody(Body):
    model: str = ""
    name: str = ""  # older clients send "name"
    stream: bool = True

    @property
    def target(self) -> str:
        if not (self.model or self.name):
            raise RequestError("missing field 'model'")
        return self.model or self.name


class PullBody(NameBody):
    force: bool = False  # replace a model of another source that a URL's name would take


class CopyBody(Body):
    source: str
    destination: str


def _stats(s: Stats | None) -> dict[str, int]:
    s = s or Stats()
    return {
        "total_duration": s.total_duration,
        "load_duration": s.load_duration,
        "prompt_eval_count": s.prompt_eval_count,
        "prompt_eval_duration": s.prompt_eval_duration,
        "eval_count": s.eval_count,
        "eval_duration": s.eval_duration,
        **({"prompt_cached": s.prompt_cached} if s.prompt_cached else {}),  # not Ollama's
    }


def _no_images(images: list[str] | None) -> None:
    if images:
        raise RequestError("images are not supported: no vision model runs in this engine yet")


async def _respond(
    request: Request, body: GenerateBody | ChatBody, req: GenerateRequest | ChatRequest, shape: Any
) -> Any:
    """Stream ``shape(chunk)`` items, or answer once when ``stream`` is off."""
    engine, timeout = engine_of(request), request.app.state.settings.request_timeout
    if not body.stream:
        r = await within(engine.complete(body.model, req, keep_alive=body.keep_alive), timeout)
        whole = Chunk(r.text, True, r.done_reason, r.stats, r.context, r.tool_calls, r.thinking)
        return shape(body.model, whole)
    items = await primed(engine.stream(body.model, req, keep_alive=body.keep_alive), timeout)

    async def encoded() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(items):
            async for c in items:
                if c.call is not None:  # Ollama sends each call whole, when it ends
                    if c.call.call is None:
                        continue
                    c = Chunk(tool_calls=[c.call.call])
                elif c.done:
                    c.tool_calls = None  # sent as they ended
                yield shape(body.model, c)

    return ndjson(encoded())


def _generate_item(model: str, c: Chunk) -> dict[str, Any]:
    item = {"model": model, "created_at": now_iso(), "response": c.text, "done": c.done}
    if c.thinking:
        item["thinking"] = c.thinking
    if c.done:
        item |= {"done_reason": c.done_reason, "context": c.context or [], **_stats(c.stats)}
    return item


def _chat_item(model: str, c: Chunk) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text}
    if c.thinking:
        message["thinking"] = c.thinking
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    item = {"model": model, "created_at": now_iso(), "message": message, "done": c.done}
    if c.done:
        item |= {"done_reason": c.done_reason, **_stats(c.stats)}
    return item


async def _load_or_unload(request: Request, model: str, keep_alive: KeepAlive, key: str) -> Any:
    """Ollama's empty request: preload the model, or unload it with keep_alive 0."""
    engine = engine_of(request)
    name = (await engine.show(model)).name
    if engine.keep_alive_seconds(keep_alive) == 0:
        await engine.unload(name)
        reason = "unload"
    else:
        await engine.load(name, keep_alive=keep_alive)
        reason = "load"
    empty = (
        {"response": ""} if key == "response" else {"message": {"role": "assistant", "content": ""}}
    )
    return {"model": name, "created_at": now_iso(), **empty, "done": True, "done_reason": reason}


@router.post(
    "/api/generate",
    operation_id="generate",
    responses=docs.answers(docs.GenerateAnswer, stream=docs.ndjson(docs.GenerateAnswer)),
)
async def generate(body: GenerateBody, request: Request) -> Any:
    _no_images(body.images)
    if not body.prompt and not body.context:
        return await _load_or_unload(request, body.model, body.keep_alive, "response")
    req = GenerateRequest(
        prompt=body.prompt,
        system=body.system,
        raw=body.raw,
        template=body.template,
        context=body.context,
        format=body.format or None,
        think=_think(body.think),
        options=body.inference_options(),
    )
    return await _respond(request, body, req, _generate_item)


@router.post(
    "/api/chat",
    operation_id="chat",
    responses=docs.answers(docs.ChatAnswer, stream=docs.ndjson(docs.ChatAnswer)),
)
async def chat(body: ChatBody, request: Request) -> Any:
    for m in body.messages:
        _no_images(m.images)
    if not body.messages:
        return await _load_or_unload(request, body.model, body.keep_alive, "message")
    messages = [
        Message(**m.model_dump(include={"role", "content", "thinking", "tool_calls", "tool_name"}))
        for m in body.messages
    ]
    req = ChatRequest(
        messages=messages,
        tools=body.tools,
        format=body.format or None,
        think=_think(body.think),
        options=body.inference_options(),
    )
    return await _respond(request, body, req, _chat_item)


@router.post("/api/embed", operation_id="embed", responses=docs.answers(docs.EmbedAnswer))
async def embed(body: EmbedBody, request: Request) -> dict[str, Any]:
    r = await engine_of(request).embed(
        body.model, body.input, truncate=body.truncate, keep_alive=body.keep_alive
    )
    return {
        "model": body.model,
        "embeddings": r.embeddings,
        "total_duration": r.stats.total_duration,
        "load_duration": r.stats.load_duration,
        "prompt_eval_count": r.stats.prompt_eval_count,
    }


@router.post(
    "/api/embeddings", operation_id="embeddings", responses=docs.answers(docs.EmbeddingAnswer)
)
async def embeddings(body: EmbeddingsBody, request: Request) -> dict[str, Any]:
    r = await engine_of(request).embed(body.model, body.prompt, keep_alive=body.keep_alive)
    return {"embedding": r.embeddings[0]}


@router.get("/api/tags", operation_id="tags", responses=docs.answers(docs.Tags))
async def tags(request: Request) -> dict[str, Any]:
    models = await engine_of(request).list()
    return {
        "models": [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": m.created_at,
                "size": m.size,
                "digest": m.sha256,
                "details": details(m),
            }
            for m in models
        ]
    }


@router.post("/api/show", operation_id="show", responses=docs.answers(docs.ShowAnswer))
async def show(body: NameBody, request: Request) -> dict[str, Any]:
    m = await engine_of(request).show(body.target)
    md = m.metadata
    caps = ["completion"] if md.model_type == "llm" else []
    caps += ["embedding"] if m.format == "gguf" or md.model_type == "embedding" else []
    caps += ["tools"] if md.chat_template and "tools" in md.chat_template else []
    info = {
        "general.architecture": md.architecture,
        "general.parameter_count": md.parameters,
        f"{md.architecture}.context_length": md.context_size,
    }
    return {
        "modelfile": f"# Modelfile generated by ferrousforge\nFROM {m.path}\n",
        "parameters": "\n".join(f"{k} {json.dumps(v)}" for k, v in m.options.items()),
        "template": md.chat_template or "",
        "details": details(m),
        "model_info": info,
        "capabilities": caps,
        "modified_at": m.created_at,
    }


@router.get("/api/ps", operation_id="ps", responses=docs.answers(docs.Ps))
async def ps(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    rows = []
    for r in await engine.ps():
        m = engine.loaded_manifest(r.name)  # answers even once its manifest is removed
        left = r.expires_in if r.expires_in is not None else 10 * 365 * 86400.0
        rows.append(
            {
                "name": r.name,
                "model": r.name,
                "size": r.memory,
                "digest": m.sha256,
                "details": details(m),
                "expires_at": iso(time.time() + left),
                "size_vram": 0 if r.device == "cpu" else r.memory,
                "context_length": r.context_length,
                "slots": r.slots,
                "running": r.running,
                "kv_used": r.kv_used,
                "kv_cached": r.kv_cached,
                "kv_total": r.kv_total,
            }
        )
    return {"models": rows}


@router.post(
    "/api/pull",
    operation_id="pull",
    responses=docs.answers(
        docs.PullStatus, stream=docs.ndjson(docs.PullStatus), links=docs.PULL_LINKS
    ),
)
async def pull(body: PullBody, request: Request) -> Any:
    """Pull a catalog model or a URL, or register a file under ``pull_paths``."""
    return await pulled(request, body.target, stream=body.stream, force=body.force)


@router.delete("/api/delete", operation_id="delete", response_class=Response, responses=docs.EMPTY)
async def delete(body: NameBody, request: Request) -> Response:
    await engine_of(request).rm(body.target)
    return Response(status_code=200)


@router.post(
    "/api/copy",
    operation_id="copy",
    response_class=Response,
    responses={**docs.EMPTY, 200: {**docs.EMPTY[200], "links": docs.COPY_LINKS}},
)
async def copy(body: CopyBody, request: Request) -> Response:
    await engine_of(request).cp(body.source, body.destination)
    return Response(status_code=200)


@router.get("/api/version", operation_id="version", responses=docs.answers(docs.Version))
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def root() -> Response:
    return Response("Ollama is running (ferrousforge)", media_type="text/plain")
