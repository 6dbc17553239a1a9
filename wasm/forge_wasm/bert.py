"""A BERT sentence encoder (all-MiniLM-L6-v2) on WebGPU: the dispatch plan of the server's
``wgpu`` backend (``kernel/backends/wgpu_backend.py``) with the same WGSL kernels, its
weights read from a safetensors file the page fetched, and no numpy."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from js import Float32Array

from . import safetensors
from .errors import ModelError
from .gpu import Kernels, open_device

MAX_TOKENS = 512  # attention.wgsl's MAX_TOKENS
MAX_HEAD_DIM = 256  # attention.wgsl's MAX_HEAD_DIM


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    positions: int

    @classmethod
    def parse(cls, text: str) -> BertConfig:
        try:
            c = json.loads(text)
            config = cls(
                int(c["hidden_size"]),
                int(c["num_attention_heads"]),
                int(c["num_hidden_layers"]),
                int(c["intermediate_size"]),
                float(c.get("layer_norm_eps", 1e-12)),
                int(c.get("max_position_embeddings", MAX_TOKENS)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"cannot read a BERT config from config.json: {e}") from e
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
            raise ModelError(
                "the Pyodide Mold runs BERT encoders with exact GELU; this one has "
                + ", ".join(unsupported)
            )
        return config


# Our name for each pipeline -> its kernel and override constants.
PIPELINES: dict[str, tuple[str, dict[str, float | bool]]] = {
    "embed": ("embed", {}),
    "norm": ("layernorm", {"RESIDUAL": False}),
    "residual_norm": ("layernorm", {"RESIDUAL": True}),
    "linear": ("matmul", {}),
    "attention": ("attention", {}),
    "gelu": ("gelu", {}),
}
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


class Weights:
    """The tensors of a safetensors file held by the page (a JS ``Uint8Array``), uploaded to
    storage buffers as f32: F32 straight from the page's bytes, F16/BF16 widened in Python."""

    def __init__(self, kernels: Kernels, data: Any, config: BertConfig) -> None:
        self.k, self.data, self.c = kernels, data, config
        self.tensors = safetensors.header(self._read, int(data.length))
        self.prefix = "bert." if "bert.embeddings.word_embeddings.weight" in self.tensors else ""

    def _read(self, begin: int, end: int) -> bytes:
        return bytes(self.data.subarray(begin, end).to_bytes())

    def get(self, name: str, *shape: int | None) -> safetensors.Tensor:
        """The tensor ``name``, which must have ``shape`` (None: any size there)."""
        tensor = self.tensors.get(self.prefix + name)
        if tensor is None:
            raise ModelError(f"model.safetensors has no tensor {name!r}")
        if len(tensor.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(tensor.shape, shape, strict=True)
        ):
            raise ModelError(
                f"model.safetensors: {name} is {list(tensor.shape)}, not {list(shape)}"
            )
        return tensor

    def upload(self, *tensors: safetensors.Tensor) -> Any:
        """One storage buffer holding ``tensors`` one after another, as f32."""
        buffer = self.k.storage(4 * sum(t.count for t in tensors))
        at = 0
        for t in tensors:
            if t.dtype == "F32":
                self.k.write_from(buffer, at, self.data, t.begin, t.end - t.begin)
            else:
                self.k.write(buffer, at, safetensors.f32(self._read(t.begin, t.end), t.dtype))
            at += 4 * t.count
        return buffer


class Bert:
    """A BERT encoder's weights on the GPU, and its forward pass as one submit of dispatches.

    Activation buffers are sized for the most rows seen so far and reused while they fit.
    """

    def __init__(self, kernels: Kernels, config: BertConfig, weights: Weights) -> None:
        self.k, self.config = kernels, config
        h, inter, get, up = config.hidden, config.intermediate, weights.get, weights.upload
        words = get("embeddings.word_embeddings.weight", None, h)
        self.vocab = words.shape[0]
        self.embeddings = [up(words)] + [
            up(get(f"embeddings.{n}_embeddings.weight", None, h))
            for n in ("position", "token_type")
        ]
        self.embed_norm = [up(get(f"embeddings.LayerNorm.{n}", h)) for n in ("weight", "bias")]
        shapes: dict[str, tuple[int, ...]] = {"out": (h, h), "up": (inter, h), "down": (h, inter)}
        shapes |= {"out_b": (h,), "up_b": (inter,), "down_b": (h,)}
        shapes |= {n: (h,) for n in ("norm1", "norm1_b", "norm2", "norm2_b")}
        self.layers = []
        for i in range(config.layers):
            layer = f"encoder.layer.{i}."
            qkv = [f"{layer}attention.self.{n}." for n in ("query", "key", "value")]
            w = {key: up(get(layer + name, *shapes[key])) for key, name in _LAYER.items()}
            w["qkv"] = up(*(get(n + "weight", h, h) for n in qkv))  # q, k, v side by side
            w["qkv_b"] = up(*(get(n + "bias", h) for n in qkv))
            self.layers.append(w)
        names = ("embed", "norm", "attention", "gelu", "qkv", "out", "up", "down")
        self.params = {n: kernels.uniform() for n in names}
        limit = int(kernels.device.limits.maxStorageBufferBindingSize)
        widest = max(3 * config.hidden, config.intermediate)
        self.max_rows = min(65535, limit // (4 * widest))  # rows one forward may hold
        self.max_tokens = min(MAX_TOKENS, config.positions)
        self._rows = 0
        self._groups: list[Any] = []
        self._lock = asyncio.Lock()  # one forward at a time: they share the activations

    @functools.cached_property
    def pipes(self) -> dict[str, Any]:
        """The pipelines by our name (compiled ahead by :func:`open_encoder`)."""
        return {key: self.k.pipeline(name, **c) for key, (name, c) in PIPELINES.items()}

    async def hidden(self, rows: list[list[int]], tokens: int) -> Any:
        """Last hidden states, a JS ``Float32Array`` (batch, tokens, hidden), of token id
        ``rows`` padded to ``tokens``, in as many forward passes as the buffer limits need."""
        if tokens > self.max_tokens:
            raise ModelError(f"{tokens} tokens do not fit this model's {self.max_tokens}")
        if any(len(r) > tokens for r in rows):
            raise ModelError(f"a row has more than the {tokens} tokens asked for")
        if any(not 0 <= t < self.vocab for r in rows for t in r):
            raise ModelError(f"token ids fall outside the {self.vocab}-word vocabulary")
        out = Float32Array.new(len(rows) * tokens * self.config.hidden)
        step = max(1, self.max_rows // max(tokens, 1))
        async with self._lock:
            for i in range(0, len(rows) if tokens else 0, step):
                out.set(
                    await self.forward(rows[i : i + step], tokens), i * tokens * self.config.hidden
                )
        return out

    def _grow(self, rows: int) -> None:
        """Allocate activations for ``rows`` token rows and bind them to every dispatch."""
        k, c, p, pipes = self.k, self.config, self.params, self.pipes
        self._rows = rows
        f32 = 4 * rows
        self.ids, self.types, self.mask = (k.storage(f32) for _ in range(3))
        self.h, self.h1, self.a, self.ctx = (k.storage(f32 * c.hidden) for _ in range(4))
        self.qkv, self.inter = k.storage(3 * f32 * c.hidden), k.storage(f32 * c.intermediate)
        self.out = k.staging(f32 * c.hidden)
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

    async def forward(self, ids: list[list[int]], tokens: int) -> Any:
        """One pass of :meth:`hidden`: ``len(ids) · tokens`` must be at most ``max_rows``."""
        batch = len(ids)
        rows = batch * tokens
        k, c, p, pipes = self.k, self.config, self.params, self.pipes
        k.watch()
        if rows > self._rows:
            self._grow(min(max(rows, 2 * self._rows), self.max_rows))
        flat = [t for r in ids for t in (*r, *[0] * (tokens - len(r)))]
        mask = [int(i < len(r)) for r in ids for i in range(tokens)]
        k.write(self.ids, 0, struct.pack(f"<{rows}I", *flat))
        k.write(self.types, 0, bytes(4 * rows))  # one segment: token type 0 throughout
        k.write(self.mask, 0, struct.pack(f"<{rows}I", *mask))
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
        steps = [
            (pipe, group, size) for (pipe, size), group in zip(plan, self._groups, strict=True)
        ]
        k.run(steps, copy=(self.h, self.out, 4 * rows * c.hidden))
        await k.check("the forward pass")
        return await k.read(self.out, rows * c.hidden)


def gelu_groups(n: int) -> tuple[int, int, int]:
    """gelu.wgsl's workgroups for ``n`` elements, within the 65535 limit per dimension."""
    groups = math.ceil(n / 256)
    x = min(groups, 65535)
    return x, math.ceil(groups / x), 1


class Encoder:
    """What the page holds: a BERT encoder on its own WebGPU device."""

    def __init__(self, bert: Bert) -> None:
        self.bert = bert
        self.hidden_size = bert.config.hidden
        self.max_tokens = bert.max_tokens

    async def hidden(self, rows: Any, tokens: int) -> Any:
        """Last hidden states (a JS ``Float32Array``) of JS arrays of token ids."""
        return await self.bert.hidden(rows.to_py() if hasattr(rows, "to_py") else rows, int(tokens))

    def close(self) -> None:
        self.bert.k.device.destroy()


async def open_encoder(config_json: str, data: Any) -> Encoder:
    """Load the encoder of ``config.json``'s text and ``model.safetensors``'s bytes (a JS
    ``Uint8Array``) onto a new WebGPU device."""
    config = BertConfig.parse(config_json)
    kernels = Kernels(await open_device())
    kernels.watch()
    compiled = None
    try:
        weights = Weights(kernels, data, config)  # reads the header: fails fast on a bad file
        compiled = kernels.compile(PIPELINES.values())
        bert = Bert(kernels, config, weights)  # uploads the weights while the GPU compiles
        await compiled
        await kernels.check("the model's buffers and pipelines")
    except BaseException:
        if compiled is not None:
            compiled.cancel()
        kernels.device.destroy()
        raise
    return Encoder(bert)
