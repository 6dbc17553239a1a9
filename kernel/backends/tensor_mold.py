"""What every tensor-model backend shares (the ``infer`` task): a worker thread, the specs
of the inputs and outputs, and the protocol. A backend's runtime part is two methods:
``_load_runtime`` (load ``self.path``, return its specs) and ``_run`` (named numpy arrays in,
named numpy arrays out). The engine has checked every input against the specs already."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..errors import ForgeError, InferenceError, ModelNotLoaded, UnsupportedTask
from ..mold import Device, LoadOptions, Occupancy
from ..schema import ChatRequest, Chunk, GenerateRequest, Request, Result, Stats
from ..store.manifest import Manifest
from ..tensors import TensorRequest, TensorSpec, pick_outputs
from ..worker import Worker

Specs = tuple[list[TensorSpec], list[TensorSpec]]  # (inputs, outputs)


class TensorMold(abc.ABC):
    """A model that takes and gives named tensors."""

    backend = ""
    tasks = frozenset({"infer"})
    context_length = 0

    def __init__(self, manifest: Manifest, device: Device, opts: LoadOptions, memory: int):
        self.name, self.device, self.opts = manifest.name, device.id, opts
        self.metadata = manifest.metadata.model_copy(deep=True)
        self.memory, self.path = memory, manifest.file
        self._worker: Worker | None = None

    @abc.abstractmethod
    def _load_runtime(self) -> Specs:
        """Load the runtime's model from ``self.path`` (on the worker thread); return the
        specs of its inputs and outputs as the runtime reports them."""

    @abc.abstractmethod
    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run once: numpy arrays by input name in, numpy arrays by output name out."""

    @property
    def input_names(self) -> list[str]:
        """The inputs' names, in the model's order (once loaded, as its runtime reports)."""
        return [s.name for s in self.metadata.input_shapes]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.metadata.output_shapes]

    def _release(self) -> None:
        """Drop the runtime's objects on the thread that made them."""
        for attr in ("_model", "_session", "_program", "_module"):
            self.__dict__.pop(attr, None)

    def _load(self) -> None:
        inputs, outputs = self._load_runtime()
        # What the runtime says wins over the manifest's copy (read at pull, maybe older)
        self.metadata.input_shapes, self.metadata.output_shapes = inputs, outputs

    async def load(self) -> None:
        self._worker = Worker(f"{self.backend}:{self.name}")
        try:
            await self._worker.call(self._load)
        except BaseException:
            self._worker.close()
            self._worker = None
            raise

    async def unload(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.call(self._release)
            await worker.stop()

    async def infer(self, req: Request) -> Result:
        if not isinstance(req, TensorRequest):
            raise UnsupportedTask(f"{self.name} is a tensor model; it only answers infer")
        if self._worker is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        outputs = await self._worker.call(self._outputs, req)
        return Result(tensors=outputs, stats=Stats())

    def _outputs(self, req: TensorRequest) -> dict[str, Any]:
        try:
            found = self._run(req.inputs)
        except ForgeError:
            raise
        except Exception as e:  # the runtime's own error types
            raise InferenceError(f"{self.backend} could not run {self.name}: {e}") from e
        return pick_outputs(found, req.outputs, self.metadata.output_shapes)

    async def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        raise UnsupportedTask(f"{self.name} is a tensor model; it cannot generate")
        yield Chunk()  # unreachable: makes this an async generator, as the protocol wants

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        raise UnsupportedTask(f"{self.name} is a tensor model; it has no tokenizer")

    async def detokenize(self, ids: Sequence[int]) -> str:
        raise UnsupportedTask(f"{self.name} is a tensor model; it has no tokenizer")

    def occupancy(self) -> Occupancy:
        return Occupancy(1, 0)
