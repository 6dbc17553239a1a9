"""Routes beyond Ollama's, for the workbench's own clients (notebooks, ``RemoteEngine``):
whole manifests, loaded models, devices, and loads with a backend and device."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from .common import engine_of

router = APIRouter(prefix="/api/forge", tags=["workbench"])


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    backend: str | None = None
    device: str | None = None
    keep_alive: str | float | int | None = None


class ModelBody(BaseModel):
    model: str = Field(min_length=1)


@router.get("/models")
async def models(request: Request) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in engine_of(request).store.list()]


@router.post("/manifest")
async def manifest(body: ModelBody, request: Request) -> dict[str, Any]:
    return engine_of(request).store.get(body.model).model_dump(mode="json")


@router.get("/loaded")
async def loaded(request: Request) -> list[dict[str, Any]]:
    return [dataclasses.asdict(m) for m in engine_of(request).ps()]


@router.get("/devices")
async def devices(request: Request) -> list[dict[str, Any]]:
    found = await asyncio.to_thread(engine_of(request).devices)  # runtimes probe slowly
    return [dataclasses.asdict(d) for d in found]


@router.post("/load")
async def load(body: LoadBody, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    row = await engine.load(
        body.model, backend=body.backend, device=body.device, keep_alive=body.keep_alive
    )
    return dataclasses.asdict(row)
