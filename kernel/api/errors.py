"""Errors as HTTP answers, in one place. Each ForgeError carries its status; each API
answers in its own dialect: Anthropic's body under ``/v1/messages``, OpenAI's under the
rest of ``/v1/``, and Ollama's ``{"error": "..."}`` elsewhere."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

from ..errors import ForgeError, RateLimited, RequestError, wire


def openai_error(e: BaseException) -> dict[str, Any]:
    """OpenAI's error body for any exception."""
    status = e.status if isinstance(e, ForgeError) else 500
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return {"error": {"message": str(e), "type": kind, "param": None, "code": status}}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error(e: BaseException) -> dict[str, Any]:
    """Anthropic's error body, ``{"type": "error", "error": {"type", "message"}}``."""
    status = e.status if isinstance(e, ForgeError) else 500
    default = "invalid_request_error" if 400 <= status < 500 else "api_error"
    kind = _ANTHROPIC_TYPES.get(status, default)
    return {"type": "error", "error": {"type": kind, "message": str(e)}}


def ollama_error(e: BaseException) -> dict[str, Any]:
    """Ollama's error body, ``{"error": "..."}``, plus the error's class and fields so the
    workbench's own clients (``RemoteEngine``) raise the same exception again."""
    return {"error": str(e), **wire(e)} if isinstance(e, ForgeError) else {"error": str(e)}


def body(path: str, e: BaseException) -> dict[str, Any]:
    """The error body for ``e`` on ``path``."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic_error(e)
    return openai_error(e) if path.startswith("/v1/") else ollama_error(e)


def headers(e: ForgeError) -> dict[str, str]:
    found = {}
    if isinstance(e, RateLimited):
        found["Retry-After"] = str(max(1, round(e.retry_after)))
        if not e.should_retry:  # the anthropic SDK would otherwise sleep it out and retry
            found["x-should-retry"] = "false"
    if e.status == 401:
        found["WWW-Authenticate"] = "Bearer"
    return found


async def forge_error(request: Request, e: ForgeError) -> JSONResponse:
    """The exception handler for every ForgeError a route raises."""
    return JSONResponse(body(request.scope["path"], e), status_code=e.status, headers=headers(e))


async def http_error(request: Request, e: HTTPException) -> JSONResponse:
    """Starlette's own answers (no such route, method not allowed) in the API's shape."""
    err = RequestError(str(e.detail) if e.detail else "request refused")
    err.status = e.status_code
    return JSONResponse(
        body(request.scope["path"], err), status_code=e.status_code, headers=dict(e.headers or {})
    )


async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
    """A body that does not validate: 400, naming the first bad field."""
    first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    err = RequestError(f"invalid request: {where + ': ' if where else ''}{first.get('msg', '')}")
    return JSONResponse(body(request.scope["path"], err), status_code=400)


async def refuse(send: Send, path: str, e: ForgeError, extra: dict[str, str] | None = None) -> None:
    """Answer ``e`` from ASGI middleware, before any route ran."""
    data = json.dumps(body(path, e)).encode()
    raw: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in {**headers(e), **(extra or {})}.items()]
    await send({"type": "http.response.start", "status": e.status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
