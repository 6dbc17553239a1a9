"""OpenAI's API: chat and text completions (SSE streams), embeddings and models."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from ..errors import RequestError
from ..schema import (
    Body,
    ChatRequest,
    Chunk,
    Format,
    GenerateRequest,
    InferenceOptions,
    Message,
    Stats,
)
from . import docs
from .common import engine_of, named_results, primed, within
from .streaming import sse

router = APIRouter(prefix="/v1", tags=["openai"])
_REASON = {"stop": "stop", "length": "length", "cancel": "stop", None: "stop"}


class StreamOptions(Body):
    include_usage: bool = False


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None

    def format(self) -> Format:
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            schema = (self.json_schema or {}).get("schema")
            if not isinstance(schema, dict):
                raise RequestError("response_format.json_schema.schema must be a JSON schema")
            return schema
        return None


class _Completion(Body):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)

    def options(self) -> InferenceOptions:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return InferenceOptions(
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            max_tokens=self.max_completion_tokens or self.max_tokens,
        )


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text is understood
            if any(p.get("type") != "text" for p in self.content):
                raise RequestError("only text content parts are supported")
            return "".join(str(p.get("text", "")) for p in self.content)
        return self.content or ""


class ChatBody(_Completion):
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None

    def request(self) -> ChatRequest:
        messages = [
            Message(
                role="system" if m.role == "developer" else m.role,
                content=m.text(),
                thinking=m.reasoning_content,
                tool_calls=[call_in(c) for c in m.tool_calls] if m.tool_calls else None,
                tool_call_id=m.tool_call_id,
            )
            for m in self.messages
        ]
        choice = self.tool_choice
        if isinstance(choice, dict):  # {"type": "function", "function": {"name": ...}}
            choice = str((choice.get("function") or {}).get("name") or "")
        return ChatRequest(
            messages=named_results(messages),
            tools=self.tools,
            tool_choice=choice,
            format=self.response_format.format() if self.response_format else None,
            think=False if self.reasoning_effort == "none" else None,
            options=self.options(),
        )


class CompletionBody(_Completion):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=0)


class EmbeddingsBody(Body):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


def _usage(c: Chunk) -> dict[str, Any]:
    s = c.stats or Stats()
    p, e = s.prompt_eval_count + s.prompt_cached, s.eval_count  # OpenAI counts cached ones
    usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": e, "total_tokens": p + e}
    if s.prompt_cached:
        usage["prompt_tokens_details"] = {"cached_tokens": s.prompt_cached}
    return usage


async def _run(request: Request, body: _Completion, req: Any, kind: str, piece: Any) -> Any:
    """Shared by chat and text completions: ``piece(chunk, final, state)`` builds one
    choice (None: nothing to send), ``state`` a dict it keeps across the stream."""
    rid, created = f"{kind}-{uuid.uuid4().hex[:24]}", int(time.time())
    obj = "chat.completion" if kind == "chatcmpl" else "text_completion"
    engine, timeout = engine_of(request), request.app.state.settings.request_timeout
    head = {"id": rid, "created": created, "model": body.model, "system_fingerprint": "forge"}
    if not body.stream:
        r = await within(engine.complete(body.model, req), timeout)
        whole = Chunk(r.text, True, r.done_reason, r.stats, None, r.tool_calls, r.thinking)
        choice = piece(whole, True, {})
        return head | {"object": obj, "choices": [choice], "usage": _usage(whole)}
    items = await primed(engine.stream(body.model, req), timeout)

    usage = body.stream_options is not None and body.stream_options.include_usage
    obj += ".chunk" if kind == "chatcmpl" else ""

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        state: dict[str, Any] = {}
        last = Chunk()
        async with contextlib.aclosing(items):
            async for c in items:
                if (choice := piece(c, False, state)) is not None:
                    yield head | {"object": obj, "choices": [choice]}
                last = c
        if usage:
            yield head | {"object": obj, "choices": [], "usage": _usage(last)}

    return sse(events())


@router.post(
    "/chat/completions",
    operation_id="chat_completions",
    responses=docs.answers(docs.ChatCompletion, stream=docs.SSE, errors=docs.OPENAI_ERRORS),
)
async def chat_completions(body: ChatBody, request: Request) -> Any:
    return await _run(request, body, body.request(), "chatcmpl", _chat_choice)


def _chat_choice(c: Chunk, final: bool, state: dict[str, Any]) -> dict[str, Any] | None:
    """A chat choice: the whole message (``final``) or one chunk's delta."""
    if final:
        message: dict[str, Any] = {"role": "assistant", "content": c.text}
        if c.thinking:
            message["reasoning_content"] = c.thinking
        if c.tool_calls:
            message["tool_calls"] = [call_out(i, call_id(), x) for i, x in enumerate(c.tool_calls)]
            message["content"] = c.text or None
        finish: str | None = "tool_calls" if c.tool_calls else _REASON[c.done_reason]
        return {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    delta: dict[str, Any] = {}
    if not state:
        delta["role"], state["called"] = "assistant", False
    if c.text:
        delta["content"] = c.text
    if c.thinking:
        delta["reasoning_content"] = c.thinking
    if c.call is not None:
        if c.call.call is not None:
            return None
        part: dict[str, Any] = {"index": c.call.index}
        if c.call.name:  # a call begins
            state["called"] = True
            part |= {"id": call_id(), "type": "function", "function": {"name": c.call.name}}
            part["function"]["arguments"] = ""
        else:
            part["function"] = {"arguments": c.call.arguments}
        delta["tool_calls"] = [part]
    finish = None
    if c.done:
        finish = "tool_calls" if state["called"] else _REASON[c.done_reason]
    elif not delta:
        return None
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def call_out(i: int, id: str, call: dict[str, Any]) -> dict[str, Any]:
    """A tool call in OpenAI's shape (arguments as JSON text) from Ollama's."""
    fn = call["function"]
    return {
        "index": i,
        "id": id,
        "type": "function",
        "function": {
            "name": fn["name"],
            "arguments": json.dumps(fn["arguments"], ensure_ascii=False),
        },
    }


def call_in(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call in Ollama's shape (the one chat templates read) from OpenAI's."""
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        with contextlib.suppress(ValueError):
            args = json.loads(args)
    return {"id": call.get("id"), "function": {"name": fn.get("name", ""), "arguments": args}}


@router.post(
    "/completions",
    operation_id="completions",
    responses=docs.answers(docs.TextCompletion, stream=docs.SSE, errors=docs.OPENAI_ERRORS),
)
async def completions(body: CompletionBody, request: Request) -> Any:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise RequestError("send one prompt per request")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    req = GenerateRequest(prompt=prompt, raw=True, options=body.options())

    def piece(c: Chunk, final: bool, state: dict[str, Any]) -> dict[str, Any] | None:
        if not (c.text or c.done):
            return None
        finish = _REASON[c.done_reason] if c.done else None
        return {"index": 0, "text": c.text, "finish_reason": finish, "logprobs": None}

    return await _run(request, body, req, "cmpl", piece)


@router.post(
    "/embeddings",
    operation_id="openai_embeddings",
    responses=docs.answers(docs.EmbeddingList, errors=docs.OPENAI_ERRORS),
)
async def embeddings(body: EmbeddingsBody, request: Request) -> dict[str, Any]:
    r = await engine_of(request).embed(body.model, body.input)

    def encode(v: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return v

    data = [
        {"object": "embedding", "index": i, "embedding": encode(v)}
        for i, v in enumerate(r.embeddings)
    ]
    n = r.stats.prompt_eval_count
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }


def _model_card(name: str, created: str) -> dict[str, Any]:
    from datetime import datetime

    try:
        ts = int(datetime.fromisoformat(created).timestamp())
    except ValueError:
        ts = 0
    return {"id": name, "object": "model", "created": ts, "owned_by": "ferrousforge"}


@router.get(
    "/models",
    operation_id="openai_models",
    responses=docs.answers(docs.ModelList, errors=docs.OPENAI_ERRORS),
)
async def models(request: Request) -> dict[str, Any]:
    found = await engine_of(request).list()
    return {"object": "list", "data": [_model_card(m.name, m.created_at) for m in found]}


@router.get(
    "/models/{model_id:path}",
    operation_id="openai_model",
    responses=docs.answers(docs.ModelCard, errors=docs.OPENAI_ERRORS),
)
async def model(model_id: str, request: Request) -> dict[str, Any]:
    m = await engine_of(request).show(model_id)
    return _model_card(m.name, m.created_at)
