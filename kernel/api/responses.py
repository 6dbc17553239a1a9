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
from pydantic import BaseModel

from ..errors import ForgeError, NotFound, RequestError
from ..hooks import current_client
from ..schema import Chunk
from . import docs
from .common import engine_of, primed, within
from .errors import openai_error
from .response_store import ResponseStore
from .responses_output import Output, chunks_of
from .responses_request import ID, ResponsesBody
from .streaming import typed_sse

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])


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
