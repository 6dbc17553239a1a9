"""The app factory: ``create_app(settings, engine)``. No module-level state.

Errors become HTTP statuses in one place (``errors.py``). Middleware, outermost first:
``RequestContext`` (request id, body limit, send timeout, logs, metrics), ``SiteGuard``
(Host and Origin), then CORS for the configured origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from .. import __version__
from ..config import Settings
from ..engine import AsyncEngine
from ..errors import ForgeError
from ..store.policy import PullPolicy
from . import anthropic, inference_protocol, ollama, openai, rerank, responses, webapp, workbench
from .auth import Authenticator
from .docs import ERRORS, OPS, READY
from .errors import bad_request, forge_error, http_error
from .metrics import Metrics
from .middleware import RequestContext
from .ratelimit import RateLimiter
from .response_store import FILE as RESPONSES_FILE
from .response_store import ResponseStore
from .security import TokenCharge, guard
from .siteguard import SiteGuard, origin_pattern

log = logging.getLogger(__name__)


def create_app(settings: Settings, engine: AsyncEngine, *, tracer_provider: Any = None) -> FastAPI:
    """The HTTP API over ``engine``: Ollama's routes, OpenAI's under /v1, rerank, health,
    metrics.

    With ``settings.otel_endpoint`` (or a ``tracer_provider``) requests are traced.
    """
    metrics = Metrics(engine.stats)
    engine.hooks.add(metrics)
    limiter = RateLimiter(settings.rate_limit_rpm, settings.rate_limit_tpm)
    engine.hooks.add(TokenCharge(limiter))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # what a crash left (unnamed blobs, stale partials) goes before anything is served
        await engine.sweep()
        preload = asyncio.create_task(_preload(app, engine, settings.preload))
        try:
            yield
        finally:
            preload.cancel()
            await engine.close()
            app.state.responses.close()
            if app.state.quotas is not None:
                app.state.quotas.usage.close()
                app.state.hub.keys.close()

    app = FastAPI(
        title="FerrousForge",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served below, behind the API key like every other route
        openapi_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.engine, app.state.ready = settings, engine, not settings.preload
    app.state.auth = Authenticator.from_settings(
        settings.api_keys,
        settings.api_keys_file,
        settings.jwt_secret,
        settings.jwt_public_key,
        settings.jwt_algorithms,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway,
    )
    app.state.hub = app.state.quotas = None
    if settings.hub.enabled:
        from .hub import HubIdentity
        from .usage import LEDGER, Quotas, Usage, group_metrics

        app.state.hub = HubIdentity(settings.hub, settings.home)
        usage = Usage(settings.home / LEDGER)
        app.state.quotas = Quotas(settings.hub.quotas, usage, settings.hub.groups)
        engine.hooks.add(app.state.quotas)
        metrics.registry.register(group_metrics(app.state.quotas))
    app.state.limiter = limiter
    app.state.responses = ResponseStore(  # what /v1/responses stored; opened on first use
        settings.home / RESPONSES_FILE,
        settings.responses_ttl,
        settings.responses_max,
        settings.responses_max_bytes,
    )
    app.state.pull_policy = PullPolicy.from_settings(settings, trusted=False)  # /api/pull's
    app.state.metrics = metrics

    guarded = [Depends(guard)]
    app.include_router(ollama.router, dependencies=guarded)
    app.include_router(openai.router, dependencies=guarded)
    app.include_router(responses.router, dependencies=guarded)
    app.include_router(anthropic.router, dependencies=guarded)
    app.include_router(rerank.router, dependencies=guarded)
    app.include_router(inference_protocol.router, dependencies=guarded)
    app.include_router(workbench.router, dependencies=guarded)
    app.include_router(webapp.router(engine, guarded))

    if settings.hub.enabled:
        from .hub import login_router
        from .hub import router as hub_router

        app.include_router(hub_router, dependencies=guarded)
        app.include_router(login_router)

    @app.get("/health", tags=["ops"], responses=OPS)
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Needs no key."""
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="FerrousForge API")

    @app.get("/ready", tags=["ops"], responses=READY)
    async def ready(request: Request) -> Response:
        """Readiness: the models named in ``preload`` are loaded. Needs no key (Kubernetes'
        probes send none), so it says how many are loaded, not which."""
        ok = request.app.state.ready
        body = {"status": "ready" if ok else "loading", "loaded": len(engine.loaded())}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        dependencies=guarded,
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **ERRORS,
        },
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_exception_handler(ForgeError, forge_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    if settings.cors_origins:  # innermost: it answers preflights SiteGuard let through
        pattern = origin_pattern(settings.cors_origins)
        app.add_middleware(
            CORSMiddleware,
            allow_origin_regex=pattern.pattern if pattern else None,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["*"],
        )
    app.add_middleware(
        SiteGuard,
        bind_host=settings.host,
        allowed_hosts=settings.allowed_hosts,
        origins=settings.cors_origins,
    )
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body=settings.max_body_bytes,
        send_timeout=settings.send_timeout,
    )
    if settings.otel_endpoint or tracer_provider is not None:
        from .tracing import instrument

        engine.hooks.add(instrument(app, settings.otel_endpoint, tracer_provider))
    if settings.hub.enabled and (prefix := os.environ.get("JUPYTERHUB_SERVICE_PREFIX")):
        from .hub import ServicePrefix

        app.add_middleware(ServicePrefix, prefix=prefix)  # outermost: before any routing
    return app


async def _preload(app: FastAPI, engine: AsyncEngine, models: list[str]) -> None:
    try:
        for name in models:
            await engine.load(name, keep_alive=-1)
            log.info("preloaded %s", name)
    except ForgeError as e:
        log.error("preload failed: %s", e)
        return
    app.state.ready = True
