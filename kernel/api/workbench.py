"""Routes beyond Ollama's, for the workbench's own clients (notebooks, ``RemoteEngine``):
whole manifests, loaded models, devices, and loads with a backend and device."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from ..schema import Body
from . import docs
from .common import engine_of

router = APIRouter(prefix="/api/forge", tags=["workbench"])


class LoadBody(Body):
    model: str = Field(min_length=1)
    backend: str | None = None
    device: str | None = None
    keep_alive: str | float | int | None = None


class ModelBody(Body):
    model: str = Field(min_length=1)


@router.get("/models", operation_id="forge_models", responses=docs.MANIFESTS)
async def models(request: Request) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in engine_of(request).store.list()]


@router.post("/manifest", operation_id="forge_manifest", responses=docs.MANIFEST)
async def manifest(body: ModelBody, request: Request) -> dict[str, Any]:
    return engine_of(request).store.get(body.model).model_dump(mode="json")


@router.get("/loaded", operation_id="forge_loaded", responses=docs.LOADED_ALL)
async def loaded(request: Request) -> list[dict[str, Any]]:
    return [dataclasses.asdict(m) for m in engine_of(request).ps()]


@router.get("/devices", operation_id="forge_devices", responses=docs.DEVICES)
async def devices(request: Request) -> list[dict[str, Any]]:
    found = await engine_of(request).probe_devices()
    return [dataclasses.asdict(d) for d in found]


@router.post("/load", operation_id="forge_load", responses=docs.LOADED)
async def load(body: LoadBody, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    row = await engine.load(
        body.model, backend=body.backend, device=body.device, keep_alive=body.keep_alive
    )
    return dataclasses.asdict(row)
