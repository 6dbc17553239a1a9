"""Read ``.safetensors`` files with numpy alone, neither torch nor the safetensors package: an
8-byte little-endian header length, a JSON header giving each tensor's dtype, shape and byte
range, then the raw little-endian data, mapped rather than read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidModelFile, UnsupportedFormat

if TYPE_CHECKING:
    import numpy.typing as npt

# safetensors dtype -> numpy dtype of the stored bytes (BF16 is widened to f32 after)
_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def load(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor in ``path`` by name; F32, F16, I64 and I32 as stored, BF16 as f32."""
    import numpy as np

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= length <= size - 8:
                raise InvalidModelFile(f"{path} is not a safetensors file: bad header length")
            header = json.loads(f.read(length))
    except OSError as e:
        raise InvalidModelFile(f"cannot read {path}: {e}") from e
    except ValueError as e:  # JSON or UTF-8
        raise InvalidModelFile(f"{path} has a corrupt safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise InvalidModelFile(f"{path} has a corrupt safetensors header: not an object")
    start = 8 + length
    data = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=start)
        if size > start
        else np.zeros(0, np.uint8)
    )
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            if info["dtype"] not in _DTYPES:
                raise UnsupportedFormat(
                    f"{path}: tensor {name!r} is {info['dtype']}; readable: {', '.join(_DTYPES)}"
                )
            dtype, shape, (begin, end) = _DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
            ok = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end)) and (
                begin <= end <= data.size
                and end - begin == math.prod(shape) * np.dtype(dtype).itemsize
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidModelFile(f"{path}: tensor {name!r} has a bad entry or lies past the end")
        array = data[begin:end].view(dtype).reshape(shape)
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors
