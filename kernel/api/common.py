"""Helpers the Ollama and OpenAI routes share: the engine, priming streams, timestamps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Request

from ..engine import AsyncEngine
from ..errors import RequestTimeout
from ..schema import Message
from ..store.manifest import Manifest

T = TypeVar("T")


def engine_of(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def primed(items: AsyncIterator[T], timeout: float | None) -> AsyncGenerator[T, None]:
    """Wait for the first item now, so errors before any output keep their HTTP status;
    then stream the rest. ``timeout`` bounds the whole request, in seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    first = await _next(items, deadline)

    async def rest() -> AsyncGenerator[T, None]:
        try:
            item = first
            while True:
                yield item
                item = await _next(items, deadline)
        except StopAsyncIteration:
            return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    return rest()


async def within(work: Awaitable[T], timeout: float | None) -> T:
    """``await work``, as a 504 RequestTimeout after ``timeout`` seconds (cancelling it)."""
    if timeout is None:
        return await work
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise RequestTimeout("request timed out (request_timeout)") from None


async def _next(items: AsyncIterator[T], deadline: float | None) -> T:
    if deadline is None:
        return await anext(items)
    try:
        return await asyncio.wait_for(anext(items), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise RequestTimeout("request timed out (request_timeout)") from None


def parameter_size(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def details(m: Manifest) -> dict[str, Any]:
    """Ollama's ``details`` block of a model."""
    md = m.metadata
    return {
        "parent_model": m.parent or "",
        "format": m.format,
        "family": md.architecture,
        "families": [md.architecture] if md.architecture else [],
        "parameter_size": parameter_size(md.parameters),
        "quantization_level": md.quantization or "",
    }


def named_results(messages: list[Message]) -> list[Message]:
    """Tool results named after the call they answer (templates show the tool's name)."""
    names = {
        c.get("id"): c["function"]["name"]
        for m in messages
        for c in m.tool_calls or ()
        if c.get("id") and "function" in c
    }
    for m in messages:
        if m.role == "tool" and m.tool_call_id and not m.tool_name:
            m.tool_name = names.get(m.tool_call_id)
    return messages
