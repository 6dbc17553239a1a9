"""Serialized ``jax.export`` programs for the ``infer`` task (the jax backend's ``jax``
format): a ``.jaxexport`` file holds the bytes of ``Exported.serialize()``.

The specs come from the program's abstract values: ``in_avals`` and ``out_avals`` (a
symbolic dimension is -1). An input or output is named by its dictionary key where the
program's tree has one (``f({"x": ...})`` takes ``x``), else ``input_0``, ``input_1``... and
``output_0``... in the order the tree flattens them. It runs jitted on the Mold's device,
which must be a platform it was exported for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DeviceUnavailable, InvalidModelFile
from ..tensors import TensorSpec, datatype_of
from .tensor_mold import Specs, TensorMold


def read(path: Path) -> Any:
    """The ``jax.export.Exported`` serialized at ``path``."""
    from .jax_backend import _jax

    jax = _jax()
    try:
        data = path.read_bytes()
        return jax.export.deserialize(bytearray(data))
    except Exception as e:  # OSError, flatbuffers' and jax's own errors for other bytes
        raise InvalidModelFile(f"jax cannot deserialize {path.name}: {str(e)[:300]}") from e


def names(tree: Any, count: int, prefix: str) -> list[str]:
    """The names of a tree's ``count`` leaves: each one's innermost dictionary key, else
    ``<prefix>_<i>`` (all of them so when keys repeat)."""
    from jax import tree_util

    paths, _ = tree_util.tree_flatten_with_path(tree_util.tree_unflatten(tree, range(count)))
    found = []
    for i, (path, _leaf) in enumerate(paths):
        keys = [k.key for k in path if isinstance(k, tree_util.DictKey)]
        found.append(str(keys[-1]) if keys else f"{prefix}_{i}")
    if len(set(found)) < len(found):
        return [f"{prefix}_{i}" for i in range(count)]
    return found


def _spec(name: str, aval: Any) -> TensorSpec:
    try:
        datatype = datatype_of(aval.dtype)
    except Exception:  # bfloat16 and the like: no protocol datatype, so unchecked
        datatype = ""
    shape = [d if isinstance(d, int) else -1 for d in aval.shape]  # a _DimExpr is symbolic
    return TensorSpec(name=name, datatype=datatype, shape=shape)


def specs(exported: Any) -> Specs:
    ins, outs = exported.in_avals, exported.out_avals
    return (
        [_spec(n, a) for n, a in zip(names(exported.in_tree, len(ins), "input"), ins, strict=True)],
        [
            _spec(n, a)
            for n, a in zip(names(exported.out_tree, len(outs), "output"), outs, strict=True)
        ],
    )


def signature(path: Path) -> Specs:
    return specs(read(path))


class JaxProgramMold(TensorMold):
    """A ``jax.export`` program answering ``infer``: ``exported.call`` jitted."""

    backend = "jax"

    def _load_runtime(self) -> Specs:
        from .jax_backend import _jax, cuda_devices

        jax = _jax()
        exported = read(self.path)
        platform = "cuda" if self.device.startswith("cuda") else "cpu"
        if platform not in exported.platforms:
            raise DeviceUnavailable(
                f"{self.name} was exported for {', '.join(exported.platforms)}, not {platform}"
            )
        if platform == "cpu":
            self._target = jax.devices("cpu")[0]
        else:
            by_id = {f"cuda:{d.id}": d for d in cuda_devices()}
            if self.device not in by_id:
                raise DeviceUnavailable(
                    f"jax has no {self.device}; available: {', '.join(['cpu', *by_id])}"
                )
            self._target = by_id[self.device]
        self._program = exported
        self._call = jax.jit(exported.call)
        return specs(exported)

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import jax
        import numpy as np
        from jax import tree_util

        flat = [jax.device_put(inputs[n], self._target) for n in self.input_names]
        args, kwargs = tree_util.tree_unflatten(self._program.in_tree, flat)
        leaves = tree_util.tree_leaves(self._call(*args, **kwargs))
        return {n: np.asarray(v) for n, v in zip(self.output_names, leaves, strict=True)}

    def _release(self) -> None:
        super()._release()
        self.__dict__.pop("_call", None)
