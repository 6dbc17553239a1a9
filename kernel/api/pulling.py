"""Pulls over HTTP, for Ollama's ``/api/pull`` and the workbench's ``/api/forge/pull``: one
answer when not streamed, else NDJSON progress whose last line names what was stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request

from ..progress import Progress
from ..store.manifest import Manifest
from .common import engine_of
from .streaming import ndjson


async def pulled(
    request: Request,
    spec: str,
    *,
    stream: bool,
    force: bool = False,
    name: str | None = None,
    sha256: str | None = None,
    manifest: bool = False,
) -> Any:
    """Pull ``spec`` within the app's pull policy. The last item (or the one answer) is
    ``{"status": "success", "model": <stored name>}``, with the whole manifest too when
    ``manifest`` is set (the workbench's clients read it instead of asking again)."""
    engine, policy = engine_of(request), request.app.state.pull_policy

    def done(m: Manifest) -> dict[str, Any]:
        item: dict[str, Any] = {"status": "success", "model": m.name}
        return item | ({"manifest": m.model_dump(mode="json")} if manifest else {})

    if not stream:
        return done(await engine.pull(spec, name=name, sha256=sha256, policy=policy, force=force))
    # a refusal raises here, before the stream starts, so it keeps its HTTP status
    events = engine.pull_stream(spec, name=name, sha256=sha256, policy=policy, force=force)

    async def items() -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(events):
            async for e in events:
                if isinstance(e, Manifest):
                    yield done(e)
                elif e.status != "success":  # said once, with the stored name
                    yield _progress(e)

    return ndjson(items())


def _progress(p: Progress) -> dict[str, Any]:
    fields = {"status": p.status, "digest": p.digest, "total": p.total, "completed": p.completed}
    return {k: v for k, v in fields.items() if v is not None}
