"""Anthropic's Messages API: ``/v1/messages`` (whole or streamed as typed events) and
``/v1/messages/count_tokens``, with tool use, thinking blocks and structured output.

Anthropic's clients send their key as ``x-api-key`` (the guard takes it) and an
``anthropic-version`` header (any is accepted); errors here have Anthropic's shape
(``errors.py``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from ..errors import RequestError
from ..schema import Body, ChatRequest, Chunk, InferenceOptions, Message, Stats
from . import docs
from .common import engine_of, named_results, primed, within
from .streaming import typed_sse

router = APIRouter(prefix="/v1", tags=["anthropic"])

_STOP = {"stop": "end_turn", "length": "max_tokens", "cancel": "end_turn", None: "end_turn"}
_CHOICE = {"auto": None, "any": "required", "none": "none"}
Content = str | list[dict[str, Any]]


class AnthropicMessage(Body):
    role: Literal["user", "assistant"]
    content: Content


class _Messages(Body):
    model: str = Field(min_length=1, max_length=512)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def request(self, options: InferenceOptions | None = None) -> ChatRequest:
        messages = [Message(role="system", content=_text(self.system))] if self.system else []
        for m in self.messages:
            messages += _messages(m)
        messages = named_results(messages)
        choice = None
        if self.tool_choice is not None:
            kind = str(self.tool_choice.get("type", "auto"))
            choice = self.tool_choice.get("name") if kind == "tool" else _CHOICE.get(kind, "?")
            if choice == "?":
                raise RequestError(f"tool_choice.type {kind!r} is not one of auto, any, tool, none")
        think = None
        if self.thinking is not None:
            think = {"enabled": True, "disabled": False}.get(str(self.thinking.get("type")))
        return ChatRequest(
            messages=messages,
            tools=[_tool(t) for t in self.tools] if self.tools else None,
            tool_choice=choice,
            think=think,
            options=options or InferenceOptions(),
        )


class OutputFormat(Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Body):
    format: OutputFormat | None = None
    effort: str | None = None  # how hard to think: no local model reads it


class MessagesBody(_Messages):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    output_config: OutputConfig | None = None

    def chat(self) -> ChatRequest:
        options = InferenceOptions(
            max_tokens=self.max_tokens,
            stop=self.stop_sequences or [],
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
        )
        req = self.request(options)
        fmt = self.output_config.format if self.output_config else None
        req.format = fmt.schema_ if fmt is not None else None
        return req


def _text(content: Content | None) -> str:
    """The text of a content (a string, or blocks of which only text is understood)."""
    if content is None or isinstance(content, str):
        return content or ""
    kinds = {b.get("type") for b in content} - {"text"}
    if kinds:
        raise RequestError(
            f"content blocks of type {sorted(map(str, kinds))[0]!r} are not supported"
        )
    return "".join(str(b.get("text", "")) for b in content)


def _messages(m: AnthropicMessage) -> list[Message]:
    """One Anthropic message as chat messages: a user turn's tool results become ``tool``
    messages (before its text), an assistant turn's tool uses its ``tool_calls``."""
    if isinstance(m.content, str):
        return [Message(role=m.role, content=m.content)]
    out: list[Message] = []
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in m.content:
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_result" and m.role == "user":
            result = block.get("content")
            content = _text(result if isinstance(result, str | list) else None)
            out.append(Message(role="tool", content=content, tool_call_id=block.get("tool_use_id")))
        elif kind == "tool_use" and m.role == "assistant":
            fn = {"name": str(block.get("name", "")), "arguments": block.get("input") or {}}
            calls.append({"id": block.get("id"), "function": fn})
        elif kind in ("thinking", "redacted_thinking") and m.role == "assistant":
            thinking.append(str(block.get("thinking", "")))
        else:
            raise RequestError(f"{m.role} content blocks of type {kind!r} are not supported")
    if text or calls or thinking or not out:
        out.append(
            Message(
                role=m.role,
                content="".join(text),
                thinking="".join(thinking) or None,
                tool_calls=calls or None,
            )
        )
    return out


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A client tool as the chat template's function tool."""
    if not isinstance(tool.get("name"), str) or "input_schema" not in tool:
        kind = tool.get("type", "?")
        raise RequestError(f"tool type {kind!r} is not supported: send tools with input_schema")
    fn = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def _usage(s: Stats | None) -> dict[str, int]:
    s = s or Stats()
    return {
        "input_tokens": s.prompt_eval_count,
        "output_tokens": s.eval_count,
        "cache_read_input_tokens": s.prompt_cached,
        "cache_creation_input_tokens": 0,
    }


def _message(model: str, content: list[dict[str, Any]], stop: str | None, s: Stats | None) -> Any:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(s),
    }


def _stop(reason: str | None, sequence: str | None) -> str:
    return "stop_sequence" if sequence is not None else _STOP[reason]


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


@router.post(
    "/messages",
    operation_id="anthropic_messages",
    responses=docs.answers(docs.AnthropicMessage, stream=docs.SSE, errors=docs.ANTHROPIC_ERRORS),
)
async def messages(body: MessagesBody, request: Request) -> Any:
    req = body.chat()
    engine, timeout = engine_of(request), request.app.state.settings.request_timeout
    if not body.stream:
        r = await within(engine.complete(body.model, req), timeout)
        content: list[dict[str, Any]] = []
        if r.thinking:
            content.append({"type": "thinking", "thinking": r.thinking, "signature": ""})
        if r.text or not r.tool_calls:
            content.append({"type": "text", "text": r.text})
        for call in r.tool_calls or ():
            fn = call["function"]
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(),
                    "name": fn["name"],
                    "input": fn["arguments"],
                }
            )
        answer = _message(body.model, content, _stop(r.done_reason, r.stop_sequence), r.stats)
        if r.tool_calls:
            answer["stop_reason"] = "tool_use"
        answer["stop_sequence"] = r.stop_sequence
        return answer
    items = await primed(engine.stream(body.model, req), timeout)
    return typed_sse(_events(body.model, items))


async def _events(
    model: str, items: AsyncGenerator[Chunk, None]
) -> AsyncGenerator[dict[str, Any], None]:
    """Anthropic's event sequence: message_start, ping, then per content block a start,
    its deltas and a stop, then message_delta (stop reason, usage) and message_stop."""
    start = _message(model, [], None, None)
    yield {"type": "message_start", "message": start}
    yield {"type": "ping"}
    index, open_kind, called = -1, "", False
    last = Chunk()
    async with contextlib.aclosing(items):
        async for last in items:
            kind = ""
            delta: dict[str, Any] = {}
            block: dict[str, Any] = {}
            if last.thinking:
                kind, block = "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                delta = {"type": "thinking_delta", "thinking": last.thinking}
            elif last.text:
                kind, block = "text", {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": last.text}
            elif last.call is not None and last.call.call is None:
                if last.call.name:  # a call begins: always a new block
                    kind, open_kind, called = f"tool{last.call.index}", "", True
                    block = {"type": "tool_use", "id": tool_use_id(), "name": last.call.name}
                    block |= {"input": {}}
                else:
                    kind = f"tool{last.call.index}"
                    delta = {"type": "input_json_delta", "partial_json": last.call.arguments}
            if not kind:
                continue
            if kind != open_kind:
                if open_kind:
                    yield {"type": "content_block_stop", "index": index}
                index, open_kind = index + 1, kind
                yield {"type": "content_block_start", "index": index, "content_block": block}
            if delta:
                yield {"type": "content_block_delta", "index": index, "delta": delta}
    if open_kind:
        yield {"type": "content_block_stop", "index": index}
    stop = "tool_use" if called else _stop(last.done_reason, last.stop_sequence)
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": last.stop_sequence},
        "usage": _usage(last.stats),
    }
    yield {"type": "message_stop"}


class CountBody(_Messages):
    pass


@router.post(
    "/messages/count_tokens",
    operation_id="anthropic_count_tokens",
    responses=docs.answers(docs.TokenCount, errors=docs.ANTHROPIC_ERRORS),
)
async def count_tokens(body: CountBody, request: Request) -> dict[str, int]:
    return {"input_tokens": await engine_of(request).count_tokens(body.model, body.request())}
