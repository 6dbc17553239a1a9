"""ONNX graphs with no tokenizer on TVM, for the ``infer`` task.

Relax's ONNX importer wants static shapes (DESIGN.md §6), so the graph is compiled once per
distinct set of input shapes: each input's dimensions fixed to the request's, the shape
arithmetic folded by onnxruntime's basic optimizer, then imported with its weights as
constants and compiled untuned. The compiled VMs live in memory only (the last
:data:`SHAPES` sets of shapes, least recently used dropped): a new shape costs a compile
(seconds for small graphs), and a reload compiles again. The specs come from the graph
itself, a named (symbolic) dimension being -1.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import InvalidModelFile, MissingExtra
from ..progress import ignore
from ..tensors import TensorSpec, datatype_of
from .tensor_mold import Specs, TensorMold
from .tvm_compile import _compile, import_folded, parse_target

SHAPES = 4  # compiled shape sets kept per model
Shapes = tuple[tuple[int, ...], ...]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise MissingExtra("onnx (for TVM's ONNX frontend)", "onnx") from e
    return onnx


def _spec(onnx: Any, value: Any) -> TensorSpec:
    kind = value.type.tensor_type
    try:
        datatype = datatype_of(onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type))
    except Exception:  # bfloat16, undefined: no protocol datatype
        datatype = ""
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)


def graph_specs(model: Any) -> Specs:
    """A graph's inputs (less the initializers older exporters list as inputs too) and
    outputs as specs."""
    onnx = _onnx()
    weights = {t.name for t in model.graph.initializer}
    return (
        [_spec(onnx, i) for i in model.graph.input if i.name not in weights],
        [_spec(onnx, o) for o in model.graph.output],
    )


def import_at(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """The Relax module of ``model`` (an onnx ModelProto, changed here) with each input's
    shape fixed to ``shapes[name]``."""
    for graph_input in model.graph.input:
        if graph_input.name in shapes:
            dims = graph_input.type.tensor_type.shape.dim
            del dims[:]
            for n in shapes[graph_input.name]:
                dims.add().dim_value = n
    return import_folded(model, "the graph")


class TvmTensorMold(TensorMold):
    """An ONNX graph with no tokenizer, compiled by TVM per input shape, run on the Relax VM."""

    backend = "tvm"

    def _load_runtime(self) -> Specs:
        import tvm

        from .onnx_backend import graph_of

        graph = graph_of(self.path)
        try:
            self._model = _onnx().load(str(graph))
        except Exception as e:  # protobuf's DecodeError and friends
            raise InvalidModelFile(f"cannot read {graph}: {e}") from e
        kind = "cuda" if self.device.startswith("cuda") else "llvm"
        self._target = parse_target(kind, self.opts.threads)
        index = int(self.device.partition(":")[2] or 0)
        self._dev = tvm.cuda(index) if kind == "cuda" else tvm.cpu()
        self._vms: OrderedDict[Shapes, Any] = OrderedDict()
        return graph_specs(self._model)

    def _vm(self, shapes: Shapes) -> Any:
        if shapes in self._vms:
            self._vms.move_to_end(shapes)
            return self._vms[shapes]
        from tvm import relax

        model = type(self._model)()
        model.CopyFrom(self._model)  # each shape fixes the dimensions of its own copy
        mod = import_at(model, dict(zip(self.input_names, shapes, strict=True)))
        label = ",".join("x".join(map(str, s)) for s in shapes)
        with tempfile.TemporaryDirectory() as work:  # only tuning writes there
            lib = _compile(mod, self._target, 0, Path(work), label, ignore)
        self._vms[shapes] = vm = relax.VirtualMachine(lib, self._dev)
        while len(self._vms) > SHAPES:
            self._vms.popitem(last=False)
        return vm

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import tvm

        arrays = [np.ascontiguousarray(inputs[n]) for n in self.input_names]
        vm = self._vm(tuple(tuple(a.shape) for a in arrays))
        result = vm["main"](*(tvm.runtime.tensor(a, self._dev) for a in arrays))
        found = [result] if hasattr(result, "numpy") else list(result)
        return {n: v.numpy() for n, v in zip(self.output_names, found, strict=True)}

    def _release(self) -> None:
        super()._release()
        self.__dict__.pop("_vms", None)
