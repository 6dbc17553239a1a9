"""The Open Inference Protocol (KServe v2), what Triton, KServe and MLServer clients speak:
health, server and model metadata, and ``infer`` with JSON tensors or the binary-data
extension (``inference_wire.py``). Errors are ``{"error": "..."}``, as the protocol has it.

Model names may hold ``/`` (``user/model:tag``), so each route takes the rest of the path
and reads an optional ``/versions/<v>`` off its end (every model has the one version "1").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from .. import __version__
from ..errors import InvalidTensor, ModelNotFound
from ..inference_wire import HEADER, decode_request, encode_response
from . import docs
from .common import engine_of, within

router = APIRouter(tags=["open inference protocol"])
_ERRORS = docs.ERRORS
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "INT8", "INT32", "INT64",
                                                "FP16", "FP32", "FP64", "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "the elements, flat or nested, row-major"},
        "parameters": {"type": "object", "description": "binary_data_size, binary_data"},
    },
}  # fmt: skip
_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {"type": "array", "items": _TENSOR},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "parameters": {"type": "object"},
                },
            }
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "example": "the JSON header, then the raw tensors (Inference-Header-Content-Length)",
        },
    },
}
_INFER_ANSWERS = {
    200: {
        "description": "the outputs: JSON, or with binary outputs the JSON header and raw "
        "tensors (application/octet-stream, Inference-Header-Content-Length)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **_ERRORS,
}
_VERSION = "1"


def _model(name: str) -> str:
    """The model a route's path names, without a ``/versions/<v>`` suffix."""
    base, sep, version = name.rpartition("/versions/")
    if sep and version and "/" not in version:
        if version != _VERSION:
            raise ModelNotFound(f"model {base!r} has no version {version[:16]!r}; it has 1")
        return base
    return name


@router.get("/v2", operation_id="v2_server_metadata", responses=_ERRORS)
async def server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": "ferrousforge", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live", operation_id="v2_live", responses=_ERRORS)
async def live() -> dict[str, bool]:
    """The server answers."""
    return {"live": True}


@router.get("/v2/health/ready", operation_id="v2_ready", responses=_ERRORS)
async def ready(request: Request) -> JSONResponse:
    """The server is ready: the models named in ``preload`` are loaded (503 until then)."""
    ok = bool(request.app.state.ready)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models/{name:path}/ready", operation_id="v2_model_ready", responses=_ERRORS)
async def model_ready(name: str, request: Request) -> dict[str, Any]:
    """The model is in the store and takes tensors (it loads on the first infer)."""
    manifest = await engine_of(request).show(_model(name))
    return {"name": manifest.name, "ready": True}


@router.post(
    "/v2/models/{name:path}/infer",
    operation_id="v2_infer",
    responses=_INFER_ANSWERS,
    openapi_extra={"requestBody": _INFER_BODY},
)
async def infer(name: str, request: Request) -> Response:
    """Run the model on the request's tensors. With the binary-data extension, the
    ``Inference-Header-Content-Length`` header gives the JSON header's length, and the raw
    tensors follow it; outputs asked for in binary come back so too."""
    raw_length = request.headers.get(HEADER)
    try:
        length = int(raw_length) if raw_length is not None else None
    except ValueError:
        raise InvalidTensor(f"{HEADER} must be an integer") from None
    call = decode_request(await request.body(), length)
    model = _model(name)
    timeout = request.app.state.settings.request_timeout
    result = await within(
        engine_of(request).infer(
            model, call.inputs, outputs=call.outputs, keep_alive=call.keep_alive
        ),
        timeout,
    )
    body, header_length = encode_response(model, result.tensors, call)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body, media_type="application/octet-stream", headers={HEADER: str(header_length)}
    )


@router.get("/v2/models/{name:path}", operation_id="v2_model_metadata", responses=_ERRORS)
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """The model's inputs and outputs: names, datatypes and shapes (-1: any size)."""
    manifest = await engine_of(request).described(_model(name))
    meta = manifest.metadata
    return {
        "name": manifest.name,
        "versions": [_VERSION],
        "platform": manifest.format,
        "inputs": [s.model_dump() for s in meta.input_shapes],
        "outputs": [s.model_dump() for s in meta.output_shapes],
    }
