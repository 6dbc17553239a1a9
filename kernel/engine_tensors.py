"""The engine's ``infer`` task: named tensors in, named tensors out, for any Mold that takes
tensors (an ONNX graph, a TorchScript or ``torch.export`` program, a SavedModel, a
``jax.export`` program, a custom model). Every input is checked against the model's specs
before it runs, against the stored manifest's before a load and the runtime's after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .engine_inference import EngineMixin
from .errors import UnsupportedTask
from .interface import KeepAlive
from .mold import Mold
from .schema import Result
from .store.manifest import Manifest
from .tensors import TensorRequest, check_inputs, check_outputs_known


class EngineTensors(EngineMixin):
    """Tensor inference, mixed into ``AsyncEngine``."""

    if TYPE_CHECKING:

        async def show(self, model: str) -> Manifest: ...
        def _with_specs(self, manifest: Manifest) -> Manifest: ...

    async def described(self, model: str) -> Manifest:
        """``show(model)``, with its tensor specs read now if the store has none yet (a
        model pulled before they were kept): what ``GET /v2/models/{name}`` answers."""
        manifest = await self.show(model)
        meta = manifest.metadata
        if meta.input_shapes or meta.output_shapes or meta.model_type == "llm":
            return manifest
        return await asyncio.to_thread(self._with_specs, manifest)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result:
        """Run ``model`` on ``inputs`` (numpy arrays or nested lists, by input name); the
        Result's ``tensors`` hold the ``outputs`` asked for (all when None), by name. An
        input of the wrong name, datatype or shape raises InvalidTensor, naming it."""
        manifest = self.store.get(model)
        wanted = list(outputs) if outputs is not None else None
        most = self.limits.max_tensor_elements
        stored = manifest.metadata
        if stored.input_shapes:  # refused before any load when the stored specs say so
            inputs = check_inputs(stored.input_shapes, inputs, max_elements=most)
            check_outputs_known(wanted, stored.output_shapes)

        def begin(mold: Mold) -> Callable[[], Awaitable[Result]]:
            if "infer" not in mold.tasks:
                raise UnsupportedTask(
                    f"{mold.name} does not take tensors (it supports: "
                    f"{', '.join(sorted(mold.tasks))})"
                )
            arrays = check_inputs(mold.metadata.input_shapes, inputs, max_elements=most)
            check_outputs_known(wanted, mold.metadata.output_shapes)
            return lambda: mold.infer(TensorRequest(arrays, wanted))

        return await self._observed(manifest, "infer", keep_alive, begin)
