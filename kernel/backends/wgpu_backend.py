"""The wgpu backend (extra ``wgpu``): BERT-style sentence encoders such as all-MiniLM-L6-v2,
computed by the WGSL kernels in ``ferrousforge/wgsl`` through wgpu-py on any adapter it finds
(Vulkan, Metal, D3D12, OpenGL). A model is a folder with ``config.json``,
``model.safetensors`` and ``tokenizer.json``; no torch is needed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import safetensors_file
from ..errors import (
    ContextOverflow,
    DeviceUnavailable,
    InvalidModelFile,
    MissingExtra,
    UnsupportedFormat,
)
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from . import wgsl
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
MAX_TOKENS = 512  # attention.wgsl's MAX_TOKENS
MAX_HEAD_DIM = 256  # attention.wgsl's MAX_HEAD_DIM


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


def gelu_groups(n: int) -> tuple[int, int, int]:
    """gelu.wgsl's workgroups for ``n`` elements, within the 65535 limit per dimension."""
    groups = math.ceil(n / 256)
    x = min(groups, 65535)
    return x, math.ceil(groups / x), 1


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    positions: int

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        try:
            c = json.loads(path.read_text())
            config = cls(
                int(c["hidden_size"]),
                int(c["num_attention_heads"]),
                int(c["num_hidden_layers"]),
                int(c["intermediate_size"]),
                float(c.get("layer_norm_eps", 1e-12)),
                int(c.get("max_position_embeddings", MAX_TOKENS)),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidModelFile(f"cannot read a BERT config from {path}: {e}") from e
        unsupported = [
            f"{key}={c.get(key)!r}"
            for key, want in (
                ("model_type", "bert"),
                ("hidden_act", "gelu"),
                ("position_embedding_type", "absolute"),
            )
            if c.get(key, want) != want
        ]
        if config.hidden % config.heads or config.hidden // config.heads > MAX_HEAD_DIM:
            unsupported.append(f"head size {config.hidden}/{config.heads}")
        if unsupported:
            raise UnsupportedFormat(
                f"the wgpu backend runs BERT encoders with exact GELU; {path} has "
                + ", ".join(unsupported)
            )
        return config


# Our name for each per-layer tensor -> its name under encoder.layer.N.
_LAYER = {
    "out": "attention.output.dense.weight",
    "out_b": "attention.output.dense.bias",
    "norm1": "attention.output.LayerNorm.weight",
    "norm1_b": "attention.output.LayerNorm.bias",
    "up": "intermediate.dense.weight",
    "up_b": "intermediate.dense.bias",
    "down": "output.dense.weight",
    "down_b": "output.dense.bias",
    "norm2": "output.LayerNorm.weight",
    "norm2_b": "output.LayerNorm.bias",
}


class Bert:
    """A BERT encoder's weights on the GPU, and its forward pass as one submit of dispatches.

    Activation buffers are sized for the most rows seen so far and reused while they fit.
    """

    def __init__(self, kernels: Kernels, config: BertConfig, tensors: dict[str, Any]) -> None:
        import numpy as np

        self.k, self.config = kernels, config
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def get(name: str) -> Any:
            try:
                return np.asarray(tensors[prefix + name], dtype=np.float32)
            except KeyError:
                raise InvalidModelFile(f"model.safetensors has no tensor {name!r}") from None

        up = kernels.upload
        words = get("embeddings.word_embeddings.weight")
        self.vocab = len(words)
        self.embeddings = [up(words)] + [
            up(get(f"embeddings.{n}_embeddings.weight")) for n in ("position", "token_type")
        ]
        self.embed_norm = [up(get(f"embeddings.LayerNorm.{n}")) for n in ("weight", "bias")]
        self.layers = []
        for i in range(config.layers):
            layer = f"encoder.layer.{i}."
            qkv = [f"{layer}attention.self.{n}." for n in ("query", "key", "value")]
            w = {key: up(get(layer + name)) for key, name in _LAYER.items()}
            w["qkv"] = up(np.concatenate([get(n + "weight") for n in qkv]))
            w["qkv_b"] = up(np.concatenate([get(n + "bias") for n in qkv]))
            self.layers.append(w)
        names = ("embed", "norm", "attention", "gelu", "qkv", "out", "up", "down")
        self.params = {n: kernels.uniform() for n in names}
        self.pipes = {
            "embed": kernels.pipeline("embed"),
            "norm": kernels.pipeline("layernorm", RESIDUAL=False),
            "residual_norm": kernels.pipeline("layernorm", RESIDUAL=True),
            "linear": kernels.pipeline("matmul"),
            "attention": kernels.pipeline("attention"),
            "gelu": kernels.pipeline("gelu"),
        }
        limit = kernels.device.limits["max-storage-buffer-binding-size"]
        widest = max(3 * config.hidden, config.intermediate)
        self.max_rows = min(65535, limit // (4 * widest))  # rows one forward may hold
        self.max_tokens = min(MAX_TOKENS, config.positions)
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
        step = max(1, self.max_rows // tokens)
        parts = [
            self.forward(ids[i : i + step], types[i : i + step], mask[i : i + step])
            for i in range(0, batch, step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _grow(self, rows: int) -> None:
        """Allocate activations for ``rows`` token rows and bind them to every dispatch."""
        k, c, p, pipes = self.k, self.config, self.params, self.pipes
        self._rows = rows
        f32 = 4 * rows
        self.ids, self.types, self.mask = (k.storage(f32) for _ in range(3))
        self.h, self.h1, self.a, self.ctx = (k.storage(f32 * c.hidden) for _ in range(4))
        self.qkv, self.inter = k.storage(3 * f32 * c.hidden), k.storage(f32 * c.intermediate)
        words, positions, types = self.embeddings
        groups = [
            k.bind(
                pipes["embed"], p["embed"], self.ids, self.types, words, positions, types, self.a
            ),
            k.bind(pipes["norm"], p["norm"], self.a, *self.embed_norm, self.h, self.a),
        ]
        lin, res = pipes["linear"], pipes["residual_norm"]
        for w in self.layers:
            groups += [
                k.bind(lin, p["qkv"], self.h, w["qkv"], w["qkv_b"], self.qkv),
                k.bind(pipes["attention"], p["attention"], self.qkv, self.mask, self.ctx),
                k.bind(lin, p["out"], self.ctx, w["out"], w["out_b"], self.a),
                k.bind(res, p["norm"], self.a, w["norm1"], w["norm1_b"], self.h1, self.h),
                k.bind(lin, p["up"], self.h1, w["up"], w["up_b"], self.inter),
                k.bind(pipes["gelu"], p["gelu"], self.inter),
                k.bind(lin, p["down"], self.inter, w["down"], w["down_b"], self.a),
                k.bind(res, p["norm"], self.a, w["norm2"], w["norm2_b"], self.h, self.h1),
            ]
        self._groups = groups

    def forward(self, ids: Any, types: Any, mask: Any) -> Any:
        """One pass of :meth:`hidden`: ``batch · tokens`` must be at most ``max_rows``."""
        import numpy as np

        batch, tokens = ids.shape
        rows = batch * tokens
        if rows > self._rows:
            self._grow(min(max(rows, 2 * self._rows), self.max_rows))
        k, c, p, pipes = self.k, self.config, self.params, self.pipes
        queue = k.device.queue
        for buffer, values in ((self.ids, ids), (self.types, types), (self.mask, mask)):
            queue.write_buffer(buffer, 0, np.ascontiguousarray(values, dtype=np.uint32))
        head = c.hidden // c.heads
        k.set_params(p["embed"], rows, tokens, c.hidden)
        k.set_params(p["norm"], rows, c.hidden, c.eps)
        k.set_params(p["attention"], tokens, c.heads, head, 1 / math.sqrt(head))
        k.set_params(p["gelu"], rows * c.intermediate)
        shapes = {
            "qkv": (3 * c.hidden, c.hidden),
            "out": (c.hidden, c.hidden),
            "up": (c.intermediate, c.hidden),
            "down": (c.hidden, c.intermediate),
        }
        for name, (n, width) in shapes.items():
            k.set_params(p[name], rows, n, width)

        def linear(n: int) -> tuple[int, int, int]:
            return math.ceil(n / 64), math.ceil(rows / 32), 1

        norm = (rows, 1, 1)
        layer = [  # the dispatches in the order _grow made their bind groups
            (pipes["linear"], linear(3 * c.hidden)),
            (pipes["attention"], (tokens, c.heads, batch)),
            (pipes["linear"], linear(c.hidden)),
            (pipes["residual_norm"], norm),
            (pipes["linear"], linear(c.intermediate)),
            (pipes["gelu"], gelu_groups(rows * c.intermediate)),
            (pipes["linear"], linear(c.hidden)),
            (pipes["residual_norm"], norm),
        ]
        plan = [(pipes["embed"], (math.ceil(c.hidden / 64), rows, 1)), (pipes["norm"], norm)]
        plan += layer * c.layers
        k.run([(pipe, group, size) for (pipe, size), group in zip(plan, self._groups, strict=True)])
        return k.read(self.h, rows * c.hidden).reshape(batch, tokens, c.hidden)


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
