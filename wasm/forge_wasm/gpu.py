"""WebGPU from Python, through Pyodide's ``js`` module: the WGSL pipelines on one device and
helpers to feed them, as ``Kernels`` in the server's ``wgpu`` backend does through wgpu-py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from js import Float32Array, GPUBufferUsage, GPUMapMode, Object, Uint8Array, navigator
from pyodide.ffi import jsnull, to_js

from . import source
from .errors import ModelError

Key = tuple[str, tuple[tuple[str, float], ...]]  # a kernel and its override constants


def missing(value: Any) -> bool:
    """Whether a JS answer is null or undefined (Pyodide gives ``jsnull`` and None)."""
    return value is None or value is jsnull


def js(value: Any) -> Any:
    """A Python dict/list (nested) as the JS object WebGPU's descriptors want."""
    return to_js(value, dict_converter=Object.fromEntries)


async def open_device() -> Any:
    """A WebGPU device with the adapter's largest buffer limits (the word embeddings are big)."""
    gpu: Any = getattr(navigator, "gpu", None)
    adapter: Any = None if missing(gpu) else await gpu.requestAdapter()
    if missing(adapter):
        raise ModelError("WebGPU gives no adapter here: the Pyodide Mold needs WebGPU")
    limits = {
        n: getattr(adapter.limits, n) for n in ("maxStorageBufferBindingSize", "maxBufferSize")
    }
    return await adapter.requestDevice(js({"requiredLimits": limits}))


class Kernels:
    """The WGSL pipelines on one WebGPU device, compiled once each, and helpers to feed them."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._pipelines: dict[Key, Any] = {}

    @staticmethod
    def _key(name: str, constants: dict[str, float | bool]) -> Key:
        return name, tuple(sorted((k, float(v)) for k, v in constants.items()))

    def _descriptor(self, key: Key) -> Any:
        name, constants = key
        module = self.device.createShaderModule(js({"label": name, "code": source(name)}))
        stage = {"module": module, "entryPoint": "main", "constants": dict(constants)}
        return js({"label": name, "layout": "auto", "compute": stage})

    def pipeline(self, name: str, **constants: float | bool) -> Any:
        key = self._key(name, constants)
        if key not in self._pipelines:
            self._pipelines[key] = self.device.createComputePipeline(self._descriptor(key))
        return self._pipelines[key]

    def compile(self, specs: Iterable[tuple[str, dict[str, float | bool]]]) -> asyncio.Future[None]:
        """Start compiling pipelines side by side, for :meth:`pipeline` to find once the
        returned awaitable is done (the GPU compiles while the caller goes on)."""
        keys = [self._key(name, constants) for name, constants in specs]
        promises = [self.device.createComputePipelineAsync(self._descriptor(k)) for k in keys]

        async def done() -> None:
            self._pipelines.update(zip(keys, await asyncio.gather(*promises), strict=True))

        return asyncio.ensure_future(done())

    def _buffer(self, nbytes: int, usage: int) -> Any:
        size = max(16, (nbytes + 3) // 4 * 4)
        return self.device.createBuffer(js({"size": size, "usage": usage}))

    def storage(self, nbytes: int) -> Any:
        u = GPUBufferUsage
        return self._buffer(nbytes, u.STORAGE | u.COPY_DST | u.COPY_SRC)

    def staging(self, nbytes: int) -> Any:
        """A buffer to copy results into and map for reading."""
        return self._buffer(nbytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST)

    def uniform(self) -> Any:
        """A 16-byte uniform buffer, the size of every kernel's ``Params``."""
        return self._buffer(16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST)

    def write(self, buffer: Any, at: int, data: bytes) -> None:
        """Copy Python ``data`` into ``buffer`` from byte ``at``."""
        array = Uint8Array.new(len(data))
        array.assign(data)
        self.device.queue.writeBuffer(buffer, at, array)

    def write_from(self, buffer: Any, at: int, array: Any, begin: int, nbytes: int) -> None:
        """Copy bytes ``begin:begin + nbytes`` of a JS ``Uint8Array`` into ``buffer``, no copy
        through Python."""
        self.device.queue.writeBuffer(buffer, at, array, begin, nbytes)

    def set_params(self, buffer: Any, *values: int | float) -> None:
        """Write up to four u32 (int) or f32 (float) fields into a ``Params`` buffer."""
        words = bytearray(16)
        for i, v in enumerate(values):
            struct.pack_into("<f" if isinstance(v, float) else "<I", words, 4 * i, v)
        self.write(buffer, 0, bytes(words))

    def bind(self, pipeline: Any, *buffers: Any) -> Any:
        """A bind group giving ``buffers`` to bindings 0, 1, ... of ``pipeline``."""
        entries = [{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)]
        layout = pipeline.getBindGroupLayout(0)
        return self.device.createBindGroup(js({"layout": layout, "entries": entries}))

    def run(
        self,
        steps: Sequence[tuple[Any, Any, tuple[int, int, int]]],
        copy: tuple[Any, Any, int] | None = None,
    ) -> None:
        """Record ``(pipeline, bind group, workgroups)`` dispatches in one pass, then the
        buffer ``copy`` (source, destination, bytes), and submit."""
        encoder = self.device.createCommandEncoder()
        compute = encoder.beginComputePass()
        for pipeline, group, (x, y, z) in steps:
            compute.setPipeline(pipeline)
            compute.setBindGroup(0, group)
            compute.dispatchWorkgroups(x, y, z)
        compute.end()
        if copy is not None:
            source_, target, nbytes = copy
            encoder.copyBufferToBuffer(source_, 0, target, 0, nbytes)
        self.device.queue.submit(js([encoder.finish()]))

    async def read(self, staging: Any, count: int) -> Any:
        """The first ``count`` f32 of a staging buffer as a JS ``Float32Array`` (waits for the
        GPU)."""
        await staging.mapAsync(GPUMapMode.READ, 0, 4 * count)
        try:
            return Float32Array.new(staging.getMappedRange(0, 4 * count).slice(0))
        finally:
            staging.unmap()

    def watch(self) -> None:
        """Start collecting validation errors (for :meth:`check`)."""
        self.device.pushErrorScope("validation")

    async def check(self, what: str) -> None:
        """Raise the first validation error WebGPU reported since :meth:`watch`."""
        error = await self.device.popErrorScope()
        if not missing(error):
            raise ModelError(f"WebGPU refused {what}: {error.message}")
