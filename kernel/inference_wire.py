"""Bodies of the Open Inference Protocol (KServe v2) ``infer`` call, both ways, for the
server's routes and the remote engines. JSON tensors carry their elements in ``data``
(flat or nested, row-major); with the binary-data extension, the JSON header is followed by
each binary tensor's raw bytes, in order, the header's length in the
``Inference-Header-Content-Length`` HTTP header. BYTES elements in binary are each a 4-byte
little-endian length and the bytes."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidTensor
from .tensors import MAX_RANK, datatype_of, dtype_of

HEADER = "Inference-Header-Content-Length"
MAX_TENSORS = 256
MAX_NAME = 256


@dataclass(slots=True)
class InferCall:
    """A decoded request: arrays by input name, outputs wanted (None: all), and which
    outputs answer in binary."""

    inputs: dict[str, Any]
    outputs: list[str] | None
    binary: set[str] = field(default_factory=set)
    binary_all: bool = False
    id: str | None = None
    keep_alive: str | float | None = None  # the request's ``parameters.keep_alive``


def encode_request(
    inputs: Mapping[str, Any],
    outputs: Sequence[str] | None,
    *,
    binary: bool = True,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """A request body for named numpy arrays, and its JSON header's length when any tensor
    travels in binary (None: the body is all JSON)."""
    blobs: list[bytes] = []
    items = [_tensor(name, array, binary, blobs) for name, array in inputs.items()]
    body: dict[str, Any] = {"inputs": items, "parameters": dict(parameters or {})}
    if outputs is not None:
        body["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    elif binary:
        body["parameters"]["binary_data_output"] = True
    header = json.dumps(body).encode()
    return (header + b"".join(blobs), len(header)) if binary else (header, None)


def decode_request(body: bytes, header_length: int | None) -> InferCall:
    """A request body as arrays; InvalidTensor (a 400) for anything malformed."""
    header, rest = _split(body, header_length)
    if not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise InvalidTensor("the request has no inputs")
    if len(header["inputs"]) > MAX_TENSORS:
        raise InvalidTensor(f"more than {MAX_TENSORS} inputs")
    inputs, offset = {}, 0
    for item in header["inputs"]:
        name, datatype, shape = _described(item)
        size = _params(item).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise InvalidTensor(f"input {name!r}: binary_data_size is past the body's end")
            inputs[name] = _from_raw(rest[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            inputs[name] = _from_data(item.get("data"), datatype, shape, name)
    if offset != len(rest):
        raise InvalidTensor(f"{len(rest) - offset} bytes after the last binary input")
    call = InferCall(inputs, None, binary_all=bool(_params(header).get("binary_data_output")))
    call.id = str(header["id"])[:MAX_NAME] if header.get("id") is not None else None
    keep_alive = _params(header).get("keep_alive")
    if keep_alive is not None and not isinstance(keep_alive, str | int | float):
        raise InvalidTensor("parameters.keep_alive must be a duration or a number of seconds")
    call.keep_alive = keep_alive
    wanted = header.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or len(wanted) > MAX_TENSORS:
            raise InvalidTensor(f"outputs must be a list of at most {MAX_TENSORS}")
        call.outputs = []
        for out in wanted:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidTensor("each output must be an object with a name")
            call.outputs.append(out["name"][:MAX_NAME])
            flag = _params(out).get("binary_data")
            if flag or (flag is None and call.binary_all):
                call.binary.add(out["name"])
    elif call.binary_all:
        call.binary = {"*"}
    return call


def encode_response(
    model: str, tensors: Mapping[str, Any], call: InferCall
) -> tuple[bytes, int | None]:
    """A response body for named numpy arrays; the header's length when any is binary."""
    blobs: list[bytes] = []
    items = [
        _tensor(name, array, name in call.binary or "*" in call.binary, blobs)
        for name, array in tensors.items()
    ]
    body: dict[str, Any] = {"model_name": model, "outputs": items}
    if call.id is not None:
        body["id"] = call.id
    header = json.dumps(body).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


def decode_response(body: bytes, header_length: int | None) -> dict[str, Any]:
    """A response body as arrays by output name."""
    header, rest = _split(body, header_length)
    found, offset = {}, 0
    for item in header.get("outputs") or []:
        name, datatype, shape = _described(item)
        size = _params(item).get("binary_data_size")
        if size is not None:
            found[name] = _from_raw(rest[offset : offset + int(size)], datatype, shape, name)
            offset += int(size)
        else:
            found[name] = _from_data(item.get("data"), datatype, shape, name)
    return found


def _tensor(name: str, array: Any, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    """One tensor's JSON entry; in binary, its bytes are appended to ``blobs``."""
    item: dict[str, Any] = {
        "name": name,
        "datatype": datatype_of(array.dtype),
        "shape": list(array.shape),
    }
    if binary:
        blob = _raw(array)
        item["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        item["data"] = _listed(array)
    return item


def _split(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidTensor(f"{HEADER} {header_length} does not fit a body of {len(body)} bytes")
    cut = len(body) if header_length is None else header_length
    try:
        header = json.loads(body[:cut])
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidTensor(f"the request's JSON header does not parse: {e}") from None
    if not isinstance(header, dict):
        raise InvalidTensor("the request's JSON header must be an object")
    return header, body[cut:]


def _params(item: Mapping[str, Any]) -> dict[str, Any]:
    params = item.get("parameters")
    return params if isinstance(params, dict) else {}


def _described(item: Any) -> tuple[str, str, list[int]]:
    if not isinstance(item, dict):
        raise InvalidTensor("each tensor must be an object with name, datatype and shape")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InvalidTensor(f"a tensor's name must be a string of 1 to {MAX_NAME} characters")
    if not isinstance(datatype, str):
        raise InvalidTensor(f"input {name!r}: datatype must be a string")
    dtype_of(datatype)  # a known one
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidTensor(
            f"input {name!r}: shape must be a list of at most {MAX_RANK} sizes, each >= 0"
        )
    return name, datatype, shape


def _raw(array: Any) -> bytes:
    import numpy as np

    if datatype_of(array.dtype) != "BYTES":
        return bytes(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    parts = []
    for element in array.reshape(-1):
        data = element if isinstance(element, bytes) else str(element).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _from_raw(raw: bytes, datatype: str, shape: list[int], name: str) -> Any:
    import numpy as np

    count = math.prod(shape)
    if datatype != "BYTES":
        dtype = dtype_of(datatype).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise InvalidTensor(
                f"input {name!r}: {len(raw)} bytes for shape {shape} of {datatype}, "
                f"not {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidTensor(f"input {name!r}: a BYTES element's length is cut short")
        (n,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    if offset != len(raw) or len(elements) != count:
        raise InvalidTensor(f"input {name!r}: {len(elements)} BYTES elements for shape {shape}")
    return np.array(elements, dtype=object).reshape(shape)


def _from_data(data: Any, datatype: str, shape: list[int], name: str) -> Any:
    import numpy as np

    if not isinstance(data, list):
        raise InvalidTensor(f"input {name!r}: data must be a list (or binary_data_size given)")
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object).reshape(-1)
            array = np.array([e.encode() if isinstance(e, str) else e for e in flat], object)
        else:
            array = np.array(data, dtype=dtype_of(datatype)).reshape(-1)
        return array.reshape(shape)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidTensor(f"input {name!r}: data does not fit {datatype}{shape}: {e}") from None


def _listed(array: Any) -> list[Any]:
    if datatype_of(array.dtype) == "BYTES":
        return [
            e.decode(errors="replace") if isinstance(e, bytes) else str(e)
            for e in array.reshape(-1)
        ]
    return array.reshape(-1).tolist()  # type: ignore[no-any-return]
