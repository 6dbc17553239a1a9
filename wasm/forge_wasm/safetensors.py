"""Read ``.safetensors`` with the standard library alone (Pyodide offline has no numpy): an
8-byte little-endian header length, a JSON header giving each tensor's dtype, shape and byte
range, then the raw little-endian data. The file is read through ``read(begin, end)``, so the
bytes may stay where they are (a JS ``Uint8Array`` in the browser, ``bytes`` in tests).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ModelError

Read = Callable[[int, int], bytes]
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}  # dtype -> bytes per element
FLOATS = ("F32", "F16", "BF16")  # what f32() widens


@dataclass(frozen=True)
class Tensor:
    """One tensor: its dtype, shape and absolute byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


def header(read: Read, size: int) -> dict[str, Tensor]:
    """Every tensor of a ``size``-byte file by name (``__metadata__`` left out)."""
    if size < 8:
        raise ModelError("model.safetensors is not a safetensors file: too short")
    (length,) = struct.unpack("<Q", read(0, 8))
    if not 2 <= length <= size - 8:
        raise ModelError("model.safetensors is not a safetensors file: bad header length")
    try:
        entries = json.loads(read(8, 8 + length))
    except ValueError as e:  # JSON or UTF-8
        raise ModelError(f"model.safetensors has a corrupt header: {e}") from e
    if not isinstance(entries, dict):
        raise ModelError("model.safetensors has a corrupt header: not an object")
    start, tensors = 8 + length, {}
    for name, info in entries.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"model.safetensors: tensor {name!r} has a bad entry")
        if dtype not in SIZES:
            raise ModelError(
                f"model.safetensors: tensor {name!r} is {dtype}; readable: {', '.join(SIZES)}"
            )
        tensor = Tensor(dtype, shape, start + begin, start + end)
        if not (begin <= end and tensor.end <= size and end - begin == tensor.count * SIZES[dtype]):
            raise ModelError(f"model.safetensors: tensor {name!r} lies past the end or is cut")
        tensors[name] = tensor
    return tensors


def f32(raw: bytes, dtype: str) -> bytes:
    """``raw`` elements of ``dtype`` (one of ``FLOATS``) as little-endian f32 bytes."""
    if dtype not in FLOATS:
        raise ModelError(f"{dtype} tensors are not weights this Mold reads (it reads {FLOATS})")
    if dtype == "F32":
        return raw
    n = len(raw) // 2
    out = bytearray(4 * n)
    if dtype == "BF16":  # the high half of an f32
        out[2::4], out[3::4] = raw[0::2], raw[1::2]
        return bytes(out)
    struct.pack_into(f"<{n}f", out, 0, *struct.unpack(f"<{n}e", raw))
    return bytes(out)


def load(data: bytes) -> dict[str, tuple[tuple[int, ...], bytes]]:
    """Every float tensor of an in-memory file as (shape, f32 bytes)."""
    view = memoryview(data)
    tensors = header(lambda b, e: bytes(view[b:e]), len(view))
    return {
        n: (t.shape, f32(bytes(view[t.begin : t.end]), t.dtype))
        for n, t in tensors.items()
        if t.dtype in FLOATS
    }
