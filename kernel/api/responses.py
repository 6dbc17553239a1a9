"""OpenAI's Responses API: ``POST /v1/responses`` (whole or streamed), and for the stored
ones ``GET`` and ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``.

Unlike Ollama's, ours is stateful: a response is stored (``store``, true by default) for
its owner, and ``previous_response_id`` continues the conversation it ended. A request is
one chat turn: the conversation's items become chat messages (``function_call`` items the
assistant's tool calls, ``function_call_output`` items tool results, ``reasoning`` items
its thinking), and the reply becomes output items again (``responses_output.Output``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from ..errors import ForgeError, NotFound, RequestError
from ..hooks import current_client
from ..schema import Body, ChatRequest, Chunk, Format, InferenceOptions, Message
from . import docs
from .common import engine_of, named_results, primed, within
from .errors import openai_error
from .openai import call_in
from .response_store import ResponseStore
from .responses_output import Output, chunks_of, item_id, usage
from .streaming import typed_sse

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])

TEXT = 1 << 23  # characters in one text: more than a body under max_body_bytes holds
ID, NAME, KIND = 256, 256, 64
Text = Annotated[str, Field(max_length=TEXT)]


class Part(Body):
    """A content part. Only text is read: ``input_text``, ``output_text``, ``refusal``,
    ``summary_text``, ``reasoning_text``."""

    type: str = Field("input_text", max_length=KIND)
    text: Text = ""
    refusal: Text = ""


Parts = Annotated[list[Part], Field(max_length=1024)]
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


class Item(Body):
    """One input item: a ``message`` (the default), ``function_call``,
    ``function_call_output`` or ``reasoning``. Fields its type does not use are ignored."""

    type: str = Field("message", max_length=KIND)
    id: str | None = Field(None, max_length=ID)
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Text | Parts = ""
    call_id: str | None = Field(None, max_length=ID)
    name: str | None = Field(None, max_length=NAME)
    arguments: Text = ""
    output: Text | Parts = ""
    summary: Parts = Field(default_factory=list)

    def canonical(self) -> dict[str, Any]:
        """The item as it is stored and listed: ids given, content as text parts."""
        if self.type == "message":
            if self.role is None:
                raise RequestError("input: a message needs a role")
            kind = "output_text" if self.role == "assistant" else "input_text"
            part: dict[str, Any] = {"type": kind, "text": ""}
            if kind == "output_text":
                part["annotations"] = []
            parts = [part | {"text": t} for t in _texts(self.content, "content")]
            return _ided("msg", self.id) | {
                "type": "message",
                "role": self.role,
                "content": parts,
                "status": "completed",
            }
        if self.type == "function_call":
            if not self.name or not self.call_id:
                raise RequestError("input: a function_call needs a name and a call_id")
            return _ided("fc", self.id) | {
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.arguments or "{}",
                "status": "completed",
            }
        if self.type == "function_call_output":
            return _ided("fco", self.id) | {
                "type": "function_call_output",
                "call_id": self.call_id or "",
                "output": "".join(_texts(self.output, "output")),
                "status": "completed",
            }
        if self.type == "reasoning":
            content = self.content if isinstance(self.content, list) else []
            return _ided("rs", self.id) | {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": t} for t in _texts(self.summary)],
                "content": [{"type": "reasoning_text", "text": t} for t in _texts(content)],
            }
        raise RequestError(
            f"input: items of type {self.type!r} are not supported; send message, "
            "function_call, function_call_output or reasoning items"
        )


def _texts(value: str | list[Part], where: str = "content") -> list[str]:
    if isinstance(value, str):
        return [value]
    for p in value:
        if p.type not in _TEXT_PARTS and p.type != "refusal":
            raise RequestError(f"input: only text {where} is supported, not {p.type!r}")
    return [p.refusal if p.type == "refusal" else p.text for p in value]


def _ided(prefix: str, given: str | None) -> dict[str, Any]:
    return {"id": given or item_id(prefix)}


class Tool(Body):
    type: str = Field("function", max_length=KIND)
    name: str = Field("", max_length=NAME)
    description: str | None = Field(None, max_length=TEXT)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def chat(self) -> dict[str, Any]:
        """The tool in the chat shape templates read."""
        if self.type != "function":
            raise RequestError(f"tools: only function tools are supported, not {self.type!r}")
        if not self.name:
            raise RequestError("tools: a function tool needs a name")
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters or {}}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


class NamedTool(Body):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=NAME)


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=NAME)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = Field(None, max_length=TEXT)
    strict: bool | None = None

    def format(self) -> Format:
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            if not isinstance(self.schema_, dict):
                raise RequestError("text.format.schema must be a JSON schema")
            return self.schema_
        return None


class TextConfig(Body):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: str | None = Field(None, max_length=KIND)


class Reasoning(Body):
    effort: str | None = Field(None, max_length=KIND)
    summary: str | None = Field(None, max_length=KIND)


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ResponsesBody(Body):
    """A request to ``POST /v1/responses``: what the server reads of OpenAI's fields (others
    are ignored; ``background`` and ``conversation`` are refused)."""

    model: str = Field(min_length=1, max_length=500)
    input: Text | Annotated[list[Item], Field(max_length=10_000)] = ""
    instructions: Text | None = None
    previous_response_id: str | None = Field(None, max_length=ID)
    store: bool = True
    stream: bool = False
    background: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: TextConfig = Field(default_factory=TextConfig)
    tools: Annotated[list[Tool], Field(max_length=256)] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | NamedTool = "auto"
    parallel_tool_calls: bool = True
    reasoning: Reasoning = Field(default_factory=Reasoning)
    metadata: Metadata = Field(default_factory=dict)
    user: str | None = Field(None, max_length=NAME)
    truncation: str | None = Field(None, max_length=KIND)
    conversation: str | dict[str, Any] | None = None

    def items(self) -> list[dict[str, Any]]:
        """This request's input, as stored items."""
        if self.background or self.conversation is not None:
            raise RequestError("background responses and conversations are not supported")
        if isinstance(self.input, str):
            return [Item(role="user", content=self.input).canonical()] if self.input else []
        return [item.canonical() for item in self.input]

    def request(self, conversation: list[dict[str, Any]]) -> ChatRequest:
        """The chat turn: ``instructions`` as the system message, then the conversation."""
        messages = [Message(role="system", content=self.instructions)] if self.instructions else []
        messages += messages_of(conversation)
        if not messages:
            raise RequestError("input is empty")
        choice = self.tool_choice
        return ChatRequest(
            messages=messages,
            tools=[t.chat() for t in self.tools] or None,
            tool_choice=choice.name if isinstance(choice, NamedTool) else choice,
            format=self.text.format.format(),
            think=False if self.reasoning.effort == "none" else None,
            options=InferenceOptions(
                temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_output_tokens
            ),
        )

    def response(self, rid: str, created: int, output: Output | None = None) -> dict[str, Any]:
        """The response object: in progress, or finished with ``output`` (fed its end)."""
        status, items, used = "in_progress", [], None
        if output is not None and output.last is not None:
            status, items, used = output.status, output.items, usage(output.last)
        cut, choice = status == "incomplete", self.tool_choice
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata,
            "model": self.model,
            "output": items,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": self.reasoning.effort, "summary": self.reasoning.summary},
            "store": self.store,
            "temperature": self.temperature,
            "text": {"format": self.text.format.model_dump(by_alias=True, exclude_none=True)},
            "tool_choice": choice.model_dump() if isinstance(choice, NamedTool) else choice,
            "tools": [t.model_dump(exclude_none=True) for t in self.tools],
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": used,
            "user": self.user,
        }


def messages_of(items: list[dict[str, Any]]) -> list[Message]:
    """Chat messages from stored items: an assistant's reasoning, text and function calls
    in a row make one assistant message, and each function call output a tool message."""
    out: list[Message] = []
    for item in items:
        kind, last = item["type"], out[-1] if out else None
        turn = last if last is not None and last.role == "assistant" else None
        if kind == "message":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])
            role = "system" if item["role"] == "developer" else item["role"]
            if role == "assistant" and turn is not None and not (turn.content or turn.tool_calls):
                turn.content = text
            else:
                out.append(Message(role=role, content=text))
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            if thinking := "".join(p["text"] for p in parts):
                out.append(Message(role="assistant", thinking=thinking))
        elif kind == "function_call":
            call = call_in({"id": item["call_id"], "function": item})
            if not isinstance(call["function"]["arguments"], dict):
                raise RequestError("input: a function_call's arguments must be a JSON object")
            if turn is not None:
                turn.tool_calls = [*(turn.tool_calls or []), call]
            else:
                out.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            out.append(Message(role="tool", content=item["output"], tool_call_id=item["call_id"]))
    return named_results(out)


def store_of(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.responses
    return store


def owner() -> str:
    """Who owns what this request stores: its authenticated principal."""
    return current_client.get() or "anonymous"


class ResponseObject(BaseModel):
    """Documents the response object (the routes build it as a dict)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None


class Deleted(BaseModel):
    id: str
    object: Literal["response"]
    deleted: bool


class InputItems(BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


ResponseId = Annotated[str, Path(max_length=ID)]


@router.post(
    "/responses",
    operation_id="create_response",
    responses=docs.answers(ResponseObject, stream=docs.SSE, errors=docs.OPENAI_ERRORS),
)
async def create(body: ResponsesBody, request: Request) -> Any:
    store, who = store_of(request), owner()
    conversation = []
    if body.previous_response_id:
        prev = await asyncio.to_thread(store.get, who, body.previous_response_id)
        if prev is None:
            raise NotFound(f"previous response {body.previous_response_id!r} not found")
        conversation = prev.input + prev.response["output"]
    conversation += body.items()
    req = body.request(conversation)
    rid, created = f"resp_{uuid.uuid4().hex}", int(time.time())
    engine, timeout = engine_of(request), request.app.state.settings.request_timeout

    async def finish(output: Output) -> dict[str, Any]:
        response = body.response(rid, created, output)
        if body.store:
            await asyncio.to_thread(store.put, who, response, conversation)
        return response

    if not body.stream:
        whole = Output()
        for c in chunks_of(await within(engine.complete(body.model, req), timeout)):
            whole.feed(c)
        return await finish(whole)
    chunks = await primed(engine.stream(body.model, req), timeout)

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        seq = 0

        def numbered(event: dict[str, Any]) -> dict[str, Any]:
            nonlocal seq
            seq += 1
            return event | {"sequence_number": seq - 1}

        start = body.response(rid, created)
        yield numbered({"type": "response.created", "response": start})
        yield numbered({"type": "response.in_progress", "response": start})
        output = Output()
        try:
            async with contextlib.aclosing(chunks):
                async for c in chunks:
                    for event in output.feed(c):
                        yield numbered(event)
            if output.last is None:  # the engine always ends with a done chunk
                output.feed(Chunk(done=True))
            response = await finish(output)
        except Exception as e:  # OpenAI's error event; "error" makes the SDK raise it
            if not isinstance(e, ForgeError):
                log.exception("response stream failed")
            err = openai_error(e)
            yield numbered(
                {"type": "error", "code": err["error"]["type"], "message": str(e), "param": None}
                | err
            )
            return
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        yield numbered({"type": kind, "response": response})

    return typed_sse(events(), openai_error)  # named events, as OpenAI sends them


@router.get(
    "/responses/{response_id}",
    operation_id="get_response",
    responses=docs.answers(ResponseObject, errors=docs.OPENAI_ERRORS),
)
async def retrieve(response_id: ResponseId, request: Request, stream: bool = False) -> Any:
    if stream:
        raise RequestError("stream: a stored response cannot be streamed again")
    return (await _stored(request, response_id)).response


@router.delete(
    "/responses/{response_id}",
    operation_id="delete_response",
    responses=docs.answers(Deleted, errors=docs.OPENAI_ERRORS),
)
async def delete(response_id: ResponseId, request: Request) -> dict[str, Any]:
    if not await asyncio.to_thread(store_of(request).delete, owner(), response_id):
        raise _unknown(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get(
    "/responses/{response_id}/input_items",
    operation_id="list_response_input_items",
    responses=docs.answers(InputItems, errors=docs.OPENAI_ERRORS),
)
async def input_items(
    response_id: ResponseId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=ID)] = None,
) -> dict[str, Any]:
    """The items the response answered (the whole conversation), a page at a time."""
    items = (await _stored(request, response_id)).input
    items = items[::-1] if order == "desc" else items
    if after is not None:
        at = next((i for i, x in enumerate(items) if x.get("id") == after), None)
        if at is None:
            raise RequestError(f"after: no item {after!r} in this response's input")
        items = items[at + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


async def _stored(request: Request, response_id: str) -> Any:
    found = await asyncio.to_thread(store_of(request).get, owner(), response_id)
    if found is None:
        raise _unknown(response_id)
    return found


def _unknown(response_id: str) -> NotFound:
    return NotFound(f"no response {response_id!r} (never stored, expired or deleted)")
