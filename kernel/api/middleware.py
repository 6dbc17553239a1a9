"""Per-request plumbing as plain ASGI: a request id, the body size limit, access logs and
the HTTP metrics. Authentication and rate limits are a route dependency (``security.py``)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hooks import current_request_id
from .metrics import Metrics

log = logging.getLogger("ferrousforge.access")
_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] in _WITH_BODY and "json" not in headers.get("content-type", ""):
            # Every body here is JSON; Ollama's clients (curl -d) often don't say so.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        rid = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = current_request_id.set(rid)
        start, status, received, too_big = time.perf_counter(), 500, 0, False

        async def limited() -> Message:
            nonlocal received, too_big
            if too_big:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # the app sees a client gone; we answer 413
                    too_big = True
                    return {"type": "http.disconnect"}
            return message

        async def tagged(message: Message) -> None:
            nonlocal status
            if too_big:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body:
                await _refuse(
                    send,
                    413,
                    f"request body of {length} bytes is over the limit of {self.max_body}",
                    rid,
                )
                status = 413
                return
            try:
                await self.app(scope, limited, tagged)
            except Exception:
                if not too_big:
                    raise
            if too_big:
                status = 413
                await _refuse(send, 413, f"request body over {self.max_body} bytes", rid)
        finally:
            took = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(took)
            log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                took * 1e3,
                extra={"status": status, "ms": round(took * 1e3, 1), "path": scope["path"]},
            )
            current_request_id.reset(token)


async def _refuse(send: Send, status: int, message: str, rid: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
