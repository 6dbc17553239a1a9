"""The stream encoders, written once: NDJSON (Ollama), server-sent events (OpenAI), and
typed server-sent events (Anthropic, whose events name their type).

Both take an async iterator of JSON-able dicts. An error after the response has started
can no longer change the status code, so it arrives as a last ``{"error": ...}`` item.
Every layer closes the one below it (``aclosing``): ``async for`` alone leaves an inner
generator suspended when the outer one is closed, and the engine's stream would keep its
model slot until the garbage collector came by.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

from ..errors import ForgeError
from .errors import anthropic_error, ollama_error, openai_error

log = logging.getLogger(__name__)

Items = AsyncGenerator[dict[str, Any], None]


def _dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


async def _guarded(items: Items, error: Callable[[BaseException], dict[str, Any]]) -> Items:
    try:
        async with contextlib.aclosing(items):  # closing a stream closes what feeds it
            async for item in items:
                yield item
    except ForgeError as e:
        yield error(e)
    except Exception as e:  # never a silent hang-up: the client gets a reason
        log.exception("stream failed")
        yield error(e)


class _Stream(StreamingResponse):
    """A StreamingResponse that always closes its items: when the client leaves, and when a
    send fails (a client that stopped reading), the generation behind them stops at once
    and its model slot is free, instead of waiting for the garbage collector."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


def ndjson(items: Items) -> StreamingResponse:
    """One JSON object per line, as Ollama streams."""

    async def body() -> AsyncIterator[str]:
        async with contextlib.aclosing(_guarded(items, ollama_error)) as guarded:
            async for item in guarded:
                yield _dumps(item) + "\n"

    return _Stream(body(), media_type="application/x-ndjson")


def typed_sse(
    items: Items, error: Callable[[BaseException], dict[str, Any]] = anthropic_error
) -> StreamingResponse:
    """``event: <type>`` then ``data: {...}`` per item, as Anthropic and OpenAI's Responses
    API stream: each item names its own ``type``; ``error`` makes the error item."""

    async def body() -> AsyncIterator[str]:
        async with contextlib.aclosing(_guarded(items, error)) as guarded:
            async for item in guarded:
                yield f"event: {item.get('type', 'error')}\ndata: {_dumps(item)}\n\n"

    return _Stream(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def sse(items: Items, *, done: bool = True) -> StreamingResponse:
    """``data: {...}`` events, then ``data: [DONE]``, as OpenAI streams."""

    async def body() -> AsyncIterator[str]:
        async with contextlib.aclosing(_guarded(items, openai_error)) as guarded:
            async for item in guarded:
                yield f"data: {_dumps(item)}\n\n"
        if done:
            yield "data: [DONE]\n\n"

    return _Stream(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
