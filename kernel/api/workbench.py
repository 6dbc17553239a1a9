"""Routes beyond Ollama's, for the workbench's own clients (notebooks, ``RemoteEngine``):
whole manifests, loaded models, devices, loads with a backend and device, pulls with a
name and a digest pin, and tokens."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from ..schema import Body
from . import docs
from .common import engine_of
from .pulling import pulled

router = APIRouter(prefix="/api/forge", tags=["workbench"])


class LoadBody(Body):
    model: str = Field(min_length=1, max_length=500)
    backend: str | None = Field(None, max_length=64)
    device: str | None = Field(None, max_length=64)
    gpu_layers: int | None = Field(None, ge=-1, le=100_000)
    num_ctx: int | None = Field(None, ge=16, le=1 << 24)
    keep_alive: str | float | int | None = None
    parallel: int | None = Field(None, ge=1, le=256)  # for a model that batches


class ModelBody(Body):
    model: str = Field(min_length=1, max_length=500)


class ForgePullBody(Body):
    """A pull with what Ollama's body cannot carry (there ``name`` means ``model``)."""

    model: str = Field(min_length=1, max_length=8192)
    name: str | None = Field(None, max_length=500)  # the stored name; derived when unset
    sha256: str | None = Field(None, max_length=128)
    force: bool = False
    stream: bool = True


class TokenizeBody(ModelBody):
    text: str = Field(max_length=1 << 22)


class DetokenizeBody(ModelBody):
    tokens: list[int] = Field(max_length=1 << 17)


@router.get("/models", operation_id="forge_models", responses=docs.MANIFESTS)
async def models(request: Request) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in await engine_of(request).list()]


@router.post("/manifest", operation_id="forge_manifest", responses=docs.MANIFEST)
async def manifest(body: ModelBody, request: Request) -> dict[str, Any]:
    return (await engine_of(request).show(body.model)).model_dump(mode="json")


@router.get("/loaded", operation_id="forge_loaded", responses=docs.LOADED_ALL)
async def loaded(request: Request) -> list[dict[str, Any]]:
    return [dataclasses.asdict(m) for m in await engine_of(request).ps()]


@router.get("/devices", operation_id="forge_devices", responses=docs.DEVICES)
async def devices(request: Request) -> list[dict[str, Any]]:
    return [dataclasses.asdict(d) for d in await engine_of(request).devices()]


@router.post("/load", operation_id="forge_load", responses=docs.LOADED)
async def load(body: LoadBody, request: Request) -> dict[str, Any]:
    """Load now; a backend that cannot read the model loads its converted form."""
    row = await engine_of(request).load(
        body.model,
        backend=body.backend,
        device=body.device,
        gpu_layers=body.gpu_layers,
        num_ctx=body.num_ctx,
        keep_alive=body.keep_alive,
        parallel=body.parallel,
    )
    return dataclasses.asdict(row)


@router.post("/unload", operation_id="forge_unload", responses=docs.UNLOADED)
async def unload(body: ModelBody, request: Request) -> dict[str, Any]:
    """Unload now, or once its running requests end; ``unloaded`` is false if it was not
    loaded."""
    return {"model": body.model, "unloaded": await engine_of(request).unload(body.model)}


@router.post(
    "/pull",
    operation_id="forge_pull",
    responses=docs.answers(docs.PullStatus, stream=docs.ndjson(docs.PullStatus)),
)
async def pull(body: ForgePullBody, request: Request) -> Any:
    """``/api/pull`` with a target ``name`` and a ``sha256`` pin; the last item carries the
    stored manifest."""
    return await pulled(
        request,
        body.model,
        stream=body.stream,
        force=body.force,
        name=body.name,
        sha256=body.sha256,
        manifest=True,
    )


@router.post("/tokenize", operation_id="forge_tokenize", responses=docs.TOKENS)
async def tokenize(body: TokenizeBody, request: Request) -> dict[str, Any]:
    tokens = await engine_of(request).tokenize(body.model, body.text)
    return {"model": body.model, "tokens": tokens}


@router.post("/detokenize", operation_id="forge_detokenize", responses=docs.TEXT)
async def detokenize(body: DetokenizeBody, request: Request) -> dict[str, Any]:
    text = await engine_of(request).detokenize(body.model, body.tokens)
    return {"model": body.model, "text": text}
