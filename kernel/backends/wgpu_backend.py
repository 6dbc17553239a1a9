"""The wgpu backend (extra ``wgpu``): BERT-style sentence encoders such as all-MiniLM-L6-v2,
computed by the WGSL kernels in ``ferrousforge/wgsl`` through wgpu-py on any adapter it finds
(Vulkan, Metal, D3D12, OpenGL). A model is a folder with ``config.json``,
``model.safetensors`` and ``tokenizer.json``; no torch is needed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import (
    ContextOverflow,
    DeviceUnavailable,
    InvalidModelFile,
    MissingExtra,
    UnsupportedFormat,
)
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from . import bert_plan, safetensors_file, wgsl
from .bert_plan import gelu_groups as gelu_groups  # tests import it from here
from .encoders import Batch, EncoderMold

# wgpu backend_type -> our device kind
_KINDS = {
    "Vulkan": "vulkan",
    "Metal": "metal",
    "D3D12": "dx12",
    "OpenGL": "gl",
    "OpenGLES": "gl",
    "WebGPU": "webgpu",
}

log = logging.getLogger(__name__)


def _wgpu() -> Any:
    import wgpu

    return wgpu


@functools.cache
def adapters() -> dict[str, Any]:
    """Every wgpu adapter by device id (``vulkan:0``, ``gl:0``, ...), numbered per kind.

    Enumerating takes a good part of a second and its answer cannot change while we run.
    """
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # Mesa's GL driver prints an error per adapter query without one (headless servers)
        runtime = Path(tempfile.gettempdir()) / f"ferrousforge-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    found: dict[str, Any] = {}
    seen: Counter[str] = Counter()
    for adapter in _wgpu().gpu.enumerate_adapters_sync():
        kind = _KINDS.get(adapter.info["backend_type"])
        if kind is not None and computes(adapter.info):
            found[f"{kind}:{seen[kind]}"] = adapter
            seen[kind] += 1
    return found


def computes(info: Any) -> bool:
    """Whether an adapter can run compute shaders. An OpenGL context below 4.3 (GLES below
    3.1) cannot, yet reports normal compute limits: NVIDIA's driver gives wgpu GL 3.3, whose
    device then fails to open. Its version leads ``description`` ("4.5 (Core Profile) ...")."""
    if info["backend_type"] not in ("OpenGL", "OpenGLES"):
        return True
    match = re.match(r"\s*(?:OpenGL ES )?(\d+)\.(\d+)", str(info.get("description", "")))
    if match is None:
        return True  # unknown: let opening the device say what is wrong
    least = (3, 1) if info["backend_type"] == "OpenGLES" else (4, 3)
    return (int(match[1]), int(match[2])) >= least


class WgpuBackend:
    name = "wgpu"
    formats = frozenset({"safetensors"})

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("wgpu", "tokenizers", "numpy"))

    def devices(self) -> list[Device]:
        import psutil

        if "tensorflow" in sys.modules:
            # Probing loads the Vulkan/GL drivers, and Mesa's bring their own LLVM, which
            # beside TensorFlow's aborts the process at exit (the other order segfaults;
            # tensorflow_backend refuses that one)
            log.warning("wgpu devices are not listed: TensorFlow is loaded in this process")
            return []
        found = []
        for device_id, adapter in adapters().items():
            info = adapter.info
            name = f"{info['device']} ({info['backend_type']}, {info['adapter_type']} adapter)"
            total = free = None
            if info["adapter_type"] == "CPU":  # its buffers live in host memory
                mem = psutil.virtual_memory()
                total, free = mem.total, mem.available
            found.append(Device(device_id, name, total, free, (self.name,)))
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.5) + (64 << 20)

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("wgpu", "wgpu")
        return WgpuMold(manifest, device, opts, self.estimate_memory(manifest, opts))


class Kernels:
    """The WGSL pipelines on one wgpu device, compiled once each, and helpers to feed them."""

    def __init__(self, device: Any) -> None:
        self.device, self._usage = device, _wgpu().BufferUsage
        self._pipelines: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def pipeline(self, name: str, **constants: float | bool) -> Any:
        key = (name, tuple(sorted(constants.items())))
        if key not in self._pipelines:
            module = self.device.create_shader_module(label=name, code=wgsl.source(name))
            stage = {"module": module, "entry_point": "main", "constants": constants}
            self._pipelines[key] = self.device.create_compute_pipeline(
                label=name, layout="auto", compute=stage
            )
        return self._pipelines[key]

    def upload(self, array: Any) -> Any:
        """A storage buffer holding ``array`` (made contiguous, f32/u32 as given)."""
        import numpy as np

        data = np.ascontiguousarray(array)
        usage = self._usage.STORAGE | self._usage.COPY_DST | self._usage.COPY_SRC
        return self.device.create_buffer_with_data(data=data, usage=usage)

    def storage(self, nbytes: int) -> Any:
        usage = self._usage.STORAGE | self._usage.COPY_DST | self._usage.COPY_SRC
        return self.device.create_buffer(size=max(nbytes, 16), usage=usage)

    def uniform(self) -> Any:
        """A 16-byte uniform buffer, the size of every kernel's ``Params``."""
        usage = self._usage.UNIFORM | self._usage.COPY_DST
        return self.device.create_buffer(size=16, usage=usage)

    def set_params(self, buffer: Any, *values: int | float) -> None:
        """Write up to four u32 (int) or f32 (float) fields into a ``Params`` buffer."""
        import numpy as np

        words = np.zeros(4, np.uint32)
        for i, v in enumerate(values):
            words[i] = np.float32(v).view(np.uint32) if isinstance(v, float) else v
        self.device.queue.write_buffer(buffer, 0, words)

    def bind(self, pipeline: Any, *buffers: Any) -> Any:
        """A bind group giving ``buffers`` to bindings 0, 1, ... of ``pipeline``."""
        entries = [{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)]
        return self.device.create_bind_group(
            layout=pipeline.get_bind_group_layout(0), entries=entries
        )

    def run(self, steps: Sequence[tuple[Any, Any, tuple[int, int, int]]]) -> None:
        """Record ``(pipeline, bind group, workgroups)`` dispatches in one pass and submit."""
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        for pipeline, group, (x, y, z) in steps:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(x, y, z)
        compute.end()
        self.device.queue.submit([encoder.finish()])

    def read(self, buffer: Any, count: int) -> Any:
        """The first ``count`` f32 of ``buffer``, as a numpy array (waits for the GPU)."""
        import numpy as np

        return np.frombuffer(self.device.queue.read_buffer(buffer, 0, count * 4), np.float32)


class BertConfig(bert_plan.BertConfig):
    """:class:`bert_plan.BertConfig`, read from a file with our errors."""

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        try:
            config = cls.parse(path.read_text())
        except (OSError, bert_plan.ConfigError) as e:
            raise InvalidModelFile(f"cannot read a BERT config from {path}: {e}") from e
        except bert_plan.Unsupported as e:
            raise UnsupportedFormat(
                f"the wgpu backend runs BERT encoders with exact GELU; {path} has {e}"
            ) from e
        return config


class Bert:
    """A BERT encoder's weights on the GPU, and its forward pass as one submit of dispatches,
    as :mod:`bert_plan` lays them out.

    Activation buffers are sized for the most rows seen so far and reused while they fit.
    """

    def __init__(
        self, kernels: Kernels, config: bert_plan.BertConfig, tensors: dict[str, Any]
    ) -> None:
        import numpy as np

        self.k, self.config = kernels, config
        prefix = bert_plan.prefix(tensors)

        def get(name: str) -> Any:
            try:
                return np.asarray(tensors[prefix + name], dtype=np.float32)
            except KeyError:
                raise InvalidModelFile(f"model.safetensors has no tensor {name!r}") from None

        self.buffers: dict[str, Any] = {}
        for w in bert_plan.weights(config):
            arrays = [get(name) for name in w.tensors]
            data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            self.buffers[w.buffer] = kernels.upload(data)
        self.vocab = len(tensors[prefix + bert_plan.WORDS])
        self.params = {n: kernels.uniform() for n in bert_plan.PARAMS}
        self.pipes = {
            key: kernels.pipeline(name, **c) for key, (name, c) in bert_plan.PIPELINES.items()
        }
        self.max_rows = config.max_rows(kernels.device.limits["max-storage-buffer-binding-size"])
        self.max_tokens = config.max_tokens
        self._rows = 0
        self._groups: list[Any] = []

    def hidden(self, ids: Any, types: Any, mask: Any) -> Any:
        """Last hidden states (batch, tokens, hidden) f32 for int arrays (batch, tokens),
        in as many forward passes as the device's buffer limits need."""
        import numpy as np

        batch, tokens = ids.shape
        if tokens > self.max_tokens:
            raise ContextOverflow(tokens, self.max_tokens)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise InvalidModelFile(f"token ids fall outside the {self.vocab}-word vocabulary")
        if batch == 0 or tokens == 0:
            return np.zeros((batch, tokens, self.config.hidden), np.float32)
        parts = [
            self.forward(ids[part], types[part], mask[part])
            for part in bert_plan.passes(batch, tokens, self.max_rows)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _grow(self, rows: int) -> None:
        """Allocate activations for ``rows`` token rows and bind them to every dispatch."""
        k, c = self.k, self.config
        self._rows = rows
        self.buffers |= {n: k.storage(size) for n, size in bert_plan.activations(c, rows).items()}
        self._groups = [
            k.bind(*g.resolve(self.pipes, self.params, self.buffers))
            for g in bert_plan.bind_groups(c)
        ]

    def forward(self, ids: Any, types: Any, mask: Any) -> Any:
        """One pass of :meth:`hidden`: ``batch · tokens`` must be at most ``max_rows``."""
        import numpy as np

        batch, tokens = ids.shape
        rows = batch * tokens
        if rows > self._rows:
            self._grow(bert_plan.grown(rows, self._rows, self.max_rows))
        k, c, queue = self.k, self.config, self.k.device.queue
        for name, values in zip(bert_plan.INPUTS, (ids, types, mask), strict=True):
            queue.write_buffer(self.buffers[name], 0, np.ascontiguousarray(values, np.uint32))
        for name, fields in bert_plan.params(c, batch, tokens).items():
            k.set_params(self.params[name], *fields)
        plan = bert_plan.dispatches(c, batch, tokens)
        k.run([(self.pipes[p], g, n) for (p, n), g in zip(plan, self._groups, strict=True)])
        return k.read(self.buffers[bert_plan.OUTPUT], rows * c.hidden).reshape(
            batch, tokens, c.hidden
        )


class WgpuMold(EncoderMold):
    backend = "wgpu"

    def _load_runtime(self) -> None:
        folder = self.path if self.path.is_dir() else self.path.parent
        config = BertConfig.read(folder / "config.json")
        tensors = safetensors_file.load(folder / "model.safetensors")
        adapter = adapters().get(self.device)
        if adapter is None:
            raise DeviceUnavailable(
                f"wgpu has no adapter {self.device}; available: {', '.join(adapters())}"
            )
        try:
            device = adapter.request_device_sync(label=self.name)
        except Exception as e:  # wgpu raises its own error types
            raise DeviceUnavailable(f"wgpu cannot open {self.device}: {e}") from e
        self._bert = Bert(Kernels(device), config, tensors)

    def _hidden(self, batch: Batch) -> Any:
        return self._bert.hidden(batch.input_ids, batch.token_type_ids, batch.attention_mask)

    def _release(self) -> None:
        bert = self.__dict__.pop("_bert", None)
        if bert is not None:
            bert.k.device.destroy()
