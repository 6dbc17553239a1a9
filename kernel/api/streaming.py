"""The two stream encoders, written once: NDJSON (Ollama) and server-sent events (OpenAI).

Both take an async iterator of JSON-able dicts. An error after the response has started
can no longer change the status code, so it arrives as a last ``{"error": ...}`` item.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from ..errors import ForgeError

log = logging.getLogger(__name__)

Items = AsyncIterator[dict[str, Any]]


def _dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


async def _guarded(items: Items, error: Callable[[BaseException], dict[str, Any]]) -> Items:
    try:
        async for item in items:
            yield item
    except ForgeError as e:
        yield error(e)
    except Exception as e:  # never a silent hang-up: the client gets a reason
        log.exception("stream failed")
        yield error(e)


def ndjson(items: Items) -> StreamingResponse:
    """One JSON object per line, as Ollama streams."""

    async def body() -> AsyncIterator[str]:
        async for item in _guarded(items, lambda e: {"error": str(e)}):
            yield _dumps(item) + "\n"

    return StreamingResponse(body(), media_type="application/x-ndjson")


def sse(items: Items, *, done: bool = True) -> StreamingResponse:
    """``data: {...}`` events, then ``data: [DONE]``, as OpenAI streams."""

    async def body() -> AsyncIterator[str]:
        async for item in _guarded(items, openai_error):
            yield f"data: {_dumps(item)}\n\n"
        if done:
            yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def openai_error(e: BaseException) -> dict[str, Any]:
    """OpenAI's error body for any exception."""
    status = e.status if isinstance(e, ForgeError) else 500
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return {"error": {"message": str(e), "type": kind, "param": None, "code": status}}
