"""Saved torch programs for the ``infer`` task (the torch backend's ``pytorch`` format): a
``.pt2`` file of ``torch.export.save`` or a ``.pt`` TorchScript file of ``torch.jit.save``.

An exported program knows its inputs: their names are the signature's user inputs, their
datatypes and shapes its placeholders' fake tensors (a symbolic dimension is -1). Its
outputs are ``output_0``, ``output_1``... in the order the program flattens them (the
signature's own output names are graph nodes', such as ``softmax``: nothing to ask for).
TorchScript keeps only the forward's argument names, so its inputs have no datatype and no
shape (only their names are checked), and its outputs are counted when it returns a tuple.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidModelFile, UnsupportedFormat
from ..tensors import DATATYPES, TensorSpec
from .tensor_mold import Specs, TensorMold

_BY_NAME = {v: k for k, v in DATATYPES.items() if k != "BYTES"}  # "float32" -> "FP32"


@contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.13 deprecates TorchScript loudly; reading a .pt file is what we are asked for
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def load(path: Path, device: str = "cpu") -> tuple[Any, Specs, Any]:
    """The program at ``path`` on the torch ``device``: (the callable, its specs, how to
    call it: the exported program's input tree, or None for TorchScript)."""
    import torch

    exported = is_exported(path)
    try:
        if exported:
            program = torch.export.load(str(path))
        else:
            with _quiet_jit():
                module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch's readers raise RuntimeError, BadZipFile, KeyError...
        what = "torch.export program" if exported else "TorchScript file (torch.jit.save)"
        raise InvalidModelFile(
            f"torch cannot load {path.name} as a {what}: {str(e).splitlines()[0][:300]}"
        ) from e
    if exported:
        specs = exported_specs(program)
        return program.module().to(device), specs, program.call_spec.in_spec
    return module.eval(), script_specs(module), None


def is_exported(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (it names its ``archive_format``)
    rather than TorchScript; by content, since a URL pull's blob has no suffix."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/archive_format") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return path.suffix == ".pt2"


def signature(path: Path) -> Specs:
    """The specs of the program at ``path``, read on the CPU (at pull)."""
    return load(path)[1]


def _datatype(dtype: Any) -> str:
    return _BY_NAME.get(str(dtype).removeprefix("torch."), "")  # bfloat16 and such: unknown


def _spec(name: str, value: Any) -> TensorSpec:
    import torch

    if not isinstance(value, torch.Tensor):
        raise UnsupportedFormat(f"the program's input {name!r} is no tensor ({value!r})")
    shape = [d if isinstance(d, int) else -1 for d in value.shape]  # a SymInt is symbolic
    return TensorSpec(name=name, datatype=_datatype(value.dtype), shape=shape)


def exported_specs(program: Any) -> Specs:
    """An ExportedProgram's user inputs and outputs, from its graph's fake tensors."""
    from torch.export.graph_signature import OutputKind

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [
        _spec(name, placeholders[name].meta.get("val"))
        for name in program.graph_signature.user_inputs
    ]
    (output,) = [n for n in program.graph.nodes if n.op == "output"]
    kinds = [s.kind for s in program.graph_signature.output_specs]
    values = [
        node.meta.get("val") if hasattr(node, "meta") else node
        for node, kind in zip(output.args[0], kinds, strict=True)
        if kind == OutputKind.USER_OUTPUT
    ]
    outputs = [
        _spec(f"output_{i}", v)
        if hasattr(v, "dtype")
        else TensorSpec(name=f"output_{i}")  # a constant
        for i, v in enumerate(values)
    ]
    return inputs, outputs


def script_specs(module: Any) -> Specs:
    """A TorchScript module's forward argument names (no datatypes, no shapes) and its
    outputs, when its return type tells how many."""
    schema = module.forward.schema
    inputs = [TensorSpec(name=a.name) for a in schema.arguments if a.name != "self"]
    returns = schema.returns[0].type if len(schema.returns) == 1 else None
    if returns is not None and returns.kind() == "TupleType":
        count = len(returns.elements())
    elif returns is not None and returns.kind() == "TensorType":
        count = 1
    else:  # a dict, a list, ...: known when it runs
        count = 0
    return inputs, [TensorSpec(name=f"output_{i}") for i in range(count)]


class TorchProgramMold(TensorMold):
    """A saved torch program (``.pt2`` or ``.pt``) answering ``infer``, under
    ``torch.inference_mode()`` on the Mold's device; numpy in and out."""

    backend = "torch"

    def _torch_device(self) -> str:
        return "mps" if self.device.startswith("metal") else self.device

    def _load_runtime(self) -> Specs:
        import torch

        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        self._module, specs, self._in_spec = load(self.path, self._torch_device())
        return specs

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import torch
        from torch.utils import _pytree as pytree

        dev = self._torch_device()
        flat = [_tensor(inputs[n]).to(dev) for n in self.input_names]
        with torch.inference_mode():
            if self._in_spec is None:  # TorchScript: the forward's arguments in order
                found = self._module(*flat)
            else:  # an exported program: its (args, kwargs) tree, rebuilt
                args, kwargs = pytree.tree_unflatten(flat, self._in_spec)
                found = self._module(*args, **kwargs)
        leaves = pytree.tree_leaves(found)
        return {f"output_{i}": _numpy(v) for i, v in enumerate(leaves)}

    def _release(self) -> None:
        super()._release()
        self.__dict__.pop("_in_spec", None)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _tensor(array: Any) -> Any:
    import torch

    # from_numpy shares the array's memory, and warns at a read-only one: copy that
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _numpy(value: Any) -> Any:
    import numpy as np
    import torch

    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
