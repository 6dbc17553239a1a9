"""Per-request plumbing as plain ASGI: a request id, the body size limit, the send timeout,
access logs and the HTTP metrics. Authentication and rate limits are a route dependency
(``security.py``); Host and Origin checks are ``siteguard.py``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge
from ..hooks import current_request_id
from .errors import refuse
from .metrics import Metrics

log = logging.getLogger("ferrousforge.access")
_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}
_BINARY_HEADER = "inference-header-content-length"
# Metrics labels must stay few: any other method a client invents is counted as "other".
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class ClientStalled(Exception):
    """The client stopped reading for longer than the send timeout."""


class RequestContext:
    def __init__(
        self, app: ASGIApp, metrics: Metrics, max_body: int, send_timeout: float = 60.0
    ) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        binary = _BINARY_HEADER in headers  # the Open Inference Protocol's raw tensors
        if (
            scope["method"] in _WITH_BODY
            and not binary
            and "json" not in headers.get("content-type", "")
        ):
            # Every other body here is JSON; Ollama's clients (curl -d) often don't say so.
            # Pages of other sites that send text/plain are refused earlier, by SiteGuard's
            # Origin check; a page cannot send the binary header without a CORS preflight.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        rid = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex[:16]
        token = current_request_id.set(rid)
        start, status, received, too_big = time.perf_counter(), 500, 0, False
        path = scope["path"]

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
            try:
                # A client that stops reading fills the socket, and send waits: without a
                # bound, its stream would hold a model slot forever.
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled from None

        request_id = {"x-request-id": rid}
        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body:
                status = 413
                await refuse(
                    send,
                    path,
                    PayloadTooLarge(
                        f"request body of {length} bytes is over the limit of {self.max_body}"
                    ),
                    request_id,
                )
                return
            try:
                await self.app(scope, limited, tagged)
            except ClientStalled:
                log.warning("%s %s: the client stopped reading; stream cut", scope["method"], path)
            except Exception:
                if not too_big:
                    raise
            if too_big:
                status = 413
                err = PayloadTooLarge(f"request body over {self.max_body} bytes")
                await refuse(send, path, err, request_id)
        finally:
            took = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(took)
            log.info(
                "%s %s %d %.1f ms",
                scope["method"][:16],
                path,
                status,
                took * 1e3,
                extra={"status": status, "ms": round(took * 1e3, 1), "path": path},
            )
            current_request_id.reset(token)
