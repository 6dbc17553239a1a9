"""Tensors for the ``infer`` task: their specs (``{name, datatype, shape}``, as the Open
Inference Protocol names them), the request, and the checks every input passes before any
runtime sees it. numpy is imported only when tensors are really handled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, model_validator

from .errors import InvalidTensor, LimitExceeded

# The protocol's datatypes -> numpy dtype names. BYTES are numpy object arrays of bytes.
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}
MAX_RANK = 16


class TensorSpec(BaseModel):
    """One input or output: its name, datatype and shape; -1 is a dimension of any size.
    An empty ``datatype`` is not known (a legacy manifest's bare shape)."""

    name: str = Field(max_length=256)
    datatype: str = ""
    shape: list[int] = Field(default_factory=list, max_length=MAX_RANK)

    @model_validator(mode="before")
    @classmethod
    def _bare_shape(cls, data: Any) -> Any:
        # Manifests written before specs stored ``input_shapes`` as bare lists of dims.
        if isinstance(data, list | tuple):
            return {"name": "", "shape": list(data)}
        return data

    def describe(self) -> str:
        dims = ", ".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name}: {self.datatype or '?'}[{dims}]"


@dataclass(slots=True)
class TensorRequest:
    """Named input arrays (numpy, already checked against the model's specs) and the
    outputs wanted (None: all of them)."""

    inputs: dict[str, Any]
    outputs: list[str] | None = None


def datatype_of(dtype: Any) -> str:
    """The protocol's datatype for a numpy dtype (strings and bytes are BYTES)."""
    import numpy as np

    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _BY_DTYPE[dt.name]
    except KeyError:
        raise InvalidTensor(f"no Open Inference Protocol datatype for numpy {dt.name}") from None


def dtype_of(datatype: str) -> Any:
    """The numpy dtype for a protocol datatype."""
    import numpy as np

    try:
        return np.dtype(DATATYPES[datatype])
    except KeyError:
        known = ", ".join(DATATYPES)
        raise InvalidTensor(f"unknown datatype {datatype[:32]!r}; known: {known}") from None


def as_array(value: Any, spec: TensorSpec | None, name: str) -> Any:
    """``value`` as a numpy array: an array as it is, nested lists in the spec's dtype."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    try:
        if spec is not None and spec.datatype == "BYTES":
            return np.array(value, dtype=object)
        return np.asarray(value, dtype=dtype_of(spec.datatype) if spec and spec.datatype else None)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidTensor(f"input {name!r}: {e}") from e


def check_inputs(
    specs: Sequence[TensorSpec], inputs: Mapping[str, Any], *, max_elements: int
) -> dict[str, Any]:
    """The inputs as numpy arrays, each checked against its spec: every input given, none
    unknown, the datatype equal and every fixed dimension matching. InvalidTensor (a 400)
    names the first input that does not fit."""
    by_name = {s.name: s for s in specs}
    unknown = [n for n in inputs if specs and n not in by_name]
    if unknown:
        raise InvalidTensor(
            f"unknown input {unknown[0][:64]!r}; the model takes: "
            + ", ".join(s.describe() for s in specs)
        )
    missing = [s.name for s in specs if s.name not in inputs]
    if missing:
        raise InvalidTensor(f"missing input {missing[0]!r} ({by_name[missing[0]].describe()})")
    arrays, total = {}, 0
    for name, value in inputs.items():
        spec = by_name.get(name)
        array = as_array(value, spec, name)
        total += int(array.size)
        if total > max_elements:
            raise LimitExceeded(
                "the input tensors' elements", total, max_elements, "max_tensor_elements"
            )
        if spec is not None:
            _check(spec, array)
        arrays[name] = array
    return arrays


def _check(spec: TensorSpec, array: Any) -> None:
    got = datatype_of(array.dtype)
    if spec.datatype and got != spec.datatype:
        raise InvalidTensor(f"input {spec.name!r} must be {spec.datatype}, not {got}")
    if not spec.shape and not spec.datatype:
        return  # nothing known about it
    fits = len(array.shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not fits:
        want = "[" + ", ".join("?" if d < 0 else str(d) for d in spec.shape) + "]"
        raise InvalidTensor(f"input {spec.name!r} must have shape {want}, not {list(array.shape)}")


def pick_outputs(
    outputs: Mapping[str, Any], wanted: Sequence[str] | None, specs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """The outputs asked for, as numpy arrays, in the order asked (all of them, in the
    model's order, when None). An output the model does not have is an InvalidTensor."""
    import numpy as np

    if wanted is None:
        return {n: np.asarray(v) for n, v in outputs.items()}
    missing = [n for n in wanted if n not in outputs]
    if missing:
        names = ", ".join(s.name for s in specs) or ", ".join(outputs)
        raise InvalidTensor(f"unknown output {missing[0][:64]!r}; the model gives: {names}")
    return {n: np.asarray(outputs[n]) for n in wanted}


def check_outputs_known(wanted: Sequence[str] | None, specs: Sequence[TensorSpec]) -> None:
    """Refuse an unknown output name before anything runs (when the model's are known)."""
    names = {s.name for s in specs}
    for n in wanted or ():
        if names and n not in names:
            raise InvalidTensor(
                f"unknown output {n[:64]!r}; the model gives: " + ", ".join(sorted(names))
            )


def spec_of(name: str, array: Any) -> TensorSpec:
    """The spec of an array as it is."""
    return TensorSpec(name=name, datatype=datatype_of(array.dtype), shape=list(array.shape))
