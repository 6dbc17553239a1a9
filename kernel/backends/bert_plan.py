"""The dispatch plan of a BERT encoder on the WGSL kernels (``ferrousforge/wgsl``): which
pipelines, which buffers and how big, which bind groups, and for each forward pass the
``Params`` values and the workgroups, in one order. Pure data and arithmetic, standard library
only, so that the two runtimes that drive those kernels share it:

- the server's ``wgpu`` backend (``wgpu_backend.Bert``: numpy and wgpu-py);
- the browser's Pyodide Mold (``forge_wasm.bert``: WebGPU through ``js``, no numpy), whose
  wheel carries this very file, copied in by ``wasm/setup.py`` as it copies the WGSL.

Each runtime keeps only its plumbing: reading tensors, making buffers, writing bytes,
recording dispatches. Errors here are :class:`ConfigError` and :class:`Unsupported`; each
runtime translates them into its own at its boundary. Nothing here may import beyond the
standard library (``tests/test_bert_plan.py`` checks): the wheel has no ``ferrousforge``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Self

MAX_TOKENS = 512  # attention.wgsl's MAX_TOKENS
MAX_HEAD_DIM = 256  # attention.wgsl's MAX_HEAD_DIM
MAX_GROUPS = 65535  # WebGPU's least maxComputeWorkgroupsPerDimension

Workgroups = tuple[int, int, int]
Params = tuple[int | float, ...]  # a kernel's Params fields: int as u32, float as f32


class ConfigError(ValueError):
    """config.json cannot be read as a BERT config (not JSON, a key missing, not a number)."""


class Unsupported(ValueError):
    """config.json is a model these kernels do not run; ``reasons`` says what, one item each
    (``hidden_act='gelu_new'``, ``head size 384/5``)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    positions: int

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        """The config of config.json's text (see :meth:`from_dict`)."""
        try:
            c = json.loads(text)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        return cls.from_dict(c)

    @classmethod
    def from_dict(cls, c: Any) -> Self:
        """The config of config.json's object: :class:`ConfigError` where it is no BERT
        config, :class:`Unsupported` where it is one the kernels do not run (only exact GELU
        and absolute positions; a head of at most ``MAX_HEAD_DIM``)."""
        try:
            config = cls(
                int(c["hidden_size"]),
                int(c["num_attention_heads"]),
                int(c["num_hidden_layers"]),
                int(c["intermediate_size"]),
                float(c.get("layer_norm_eps", 1e-12)),
                int(c.get("max_position_embeddings", MAX_TOKENS)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(str(e)) from e
        unsupported = [
            f"{key}={c.get(key)!r}"
            for key, want in (
                ("model_type", "bert"),
                ("hidden_act", "gelu"),
                ("position_embedding_type", "absolute"),
            )
            if c.get(key, want) != want
        ]
        h, heads = config.hidden, config.heads
        if heads <= 0 or h % heads or h // heads > MAX_HEAD_DIM:
            unsupported.append(f"head size {h}/{heads}")
        if unsupported:
            raise Unsupported(unsupported)
        return config

    @property
    def head(self) -> int:
        return self.hidden // self.heads

    @property
    def max_tokens(self) -> int:
        """The most tokens a sequence may have: the kernels' and the position table's."""
        return min(MAX_TOKENS, self.positions)

    def max_rows(self, binding_limit: int) -> int:
        """The most token rows one forward pass may hold under a device's
        ``maxStorageBufferBindingSize`` (its widest activation is one binding)."""
        widest = max(3 * self.hidden, self.intermediate)
        return min(MAX_GROUPS, binding_limit // (4 * widest))


# Our name for each pipeline -> its kernel and override constants.
PIPELINES: dict[str, tuple[str, dict[str, float | bool]]] = {
    "embed": ("embed", {}),
    "norm": ("layernorm", {"RESIDUAL": False}),
    "residual_norm": ("layernorm", {"RESIDUAL": True}),
    "linear": ("matmul", {}),
    "attention": ("attention", {}),
    "gelu": ("gelu", {}),
}
# The 16-byte Params uniforms, one each, by name (see params()).
PARAMS = ("embed", "norm", "attention", "gelu", "qkv", "out", "up", "down")
# Our name for each per-layer tensor -> its name under encoder.layer.N.
LAYER = {
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
EMBEDDINGS = ("word", "position", "token_type")  # embeddings.{name}_embeddings.weight
WORDS = "embeddings.word_embeddings.weight"  # its rows are the vocabulary
INPUTS = ("ids", "types", "mask")  # u32 per token row, written before each forward
OUTPUT = "h"  # the activation holding the last hidden states after a forward


def prefix(names: Container[str]) -> str:
    """What the tensor names of a safetensors file begin with: ``bert.`` (BertModel saved
    from a task model) or nothing."""
    return "bert." if "bert." + WORDS in names else ""


@dataclass(frozen=True)
class Weight:
    """A storage buffer of weights: ``tensors`` (names without :func:`prefix`) laid end to
    end as f32, each of ``shape`` (None: any size there)."""

    buffer: str
    tensors: tuple[str, ...]
    shape: tuple[int | None, ...]


def weights(c: BertConfig) -> list[Weight]:
    """The weight buffers: the embeddings', then each layer's as ``{layer}.{LAYER key}`` and
    ``{layer}.qkv``/``{layer}.qkv_b`` (query, key and value side by side)."""
    h, inter = c.hidden, c.intermediate
    found = [
        Weight(f"{n}_embeddings", (f"embeddings.{n}_embeddings.weight",), (None, h))
        for n in EMBEDDINGS
    ]
    found += [
        Weight(buffer, (f"embeddings.LayerNorm.{n}",), (h,))
        for buffer, n in (("embed_norm", "weight"), ("embed_norm_b", "bias"))
    ]
    shapes: dict[str, tuple[int | None, ...]] = {"out": (h, h), "up": (inter, h)}
    shapes |= {"down": (h, inter), "out_b": (h,), "up_b": (inter,), "down_b": (h,)}
    shapes |= {n: (h,) for n in ("norm1", "norm1_b", "norm2", "norm2_b")}
    for i in range(c.layers):
        layer = f"encoder.layer.{i}."
        qkv = [f"{layer}attention.self.{n}." for n in ("query", "key", "value")]
        found += [Weight(f"{i}.{key}", (layer + name,), shapes[key]) for key, name in LAYER.items()]
        found.append(Weight(f"{i}.qkv", tuple(n + "weight" for n in qkv), (h, h)))
        found.append(Weight(f"{i}.qkv_b", tuple(n + "bias" for n in qkv), (h,)))
    return found


def activations(c: BertConfig, rows: int) -> dict[str, int]:
    """The activation buffers for ``rows`` token rows, by name, with their sizes in bytes."""
    f32 = 4 * rows
    sizes = dict.fromkeys(INPUTS, f32)
    sizes |= dict.fromkeys(("h", "h1", "a", "ctx"), f32 * c.hidden)
    return sizes | {"qkv": 3 * f32 * c.hidden, "inter": f32 * c.intermediate}


@dataclass(frozen=True)
class Bind:
    """A bind group: the ``params`` uniform at binding 0, then ``buffers`` (activation or
    weight names) at 1, 2, ... of ``pipeline``'s layout."""

    pipeline: str
    params: str
    buffers: tuple[str, ...]

    def resolve(
        self, pipes: Mapping[str, Any], uniforms: Mapping[str, Any], buffers: Mapping[str, Any]
    ) -> list[Any]:
        """A runtime's pipeline, then its objects for the bindings, from its tables by name:
        what its ``bind(pipeline, *buffers)`` takes."""
        return [pipes[self.pipeline], uniforms[self.params], *(buffers[n] for n in self.buffers)]


def bind_groups(c: BertConfig) -> list[Bind]:
    """Every dispatch's bind group, in the order of a forward pass: embed and normalize,
    then each layer's attention block and feed-forward block."""
    groups = [
        Bind("embed", "embed", ("ids", "types", *(f"{n}_embeddings" for n in EMBEDDINGS), "a")),
        Bind("norm", "norm", ("a", "embed_norm", "embed_norm_b", "h", "a")),
    ]
    for i in range(c.layers):
        w = f"{i}."
        groups += [
            Bind("linear", "qkv", ("h", w + "qkv", w + "qkv_b", "qkv")),
            Bind("attention", "attention", ("qkv", "mask", "ctx")),
            Bind("linear", "out", ("ctx", w + "out", w + "out_b", "a")),
            Bind("residual_norm", "norm", ("a", w + "norm1", w + "norm1_b", "h1", "h")),
            Bind("linear", "up", ("h1", w + "up", w + "up_b", "inter")),
            Bind("gelu", "gelu", ("inter",)),
            Bind("linear", "down", ("inter", w + "down", w + "down_b", "a")),
            Bind("residual_norm", "norm", ("a", w + "norm2", w + "norm2_b", "h", "h1")),
        ]
    return groups


def params(c: BertConfig, batch: int, tokens: int) -> dict[str, Params]:
    """Each ``Params`` uniform's fields for a forward pass of ``batch`` sequences of
    ``tokens`` (a linear's: rows, outputs, inputs)."""
    rows = batch * tokens
    return {
        "embed": (rows, tokens, c.hidden),
        "norm": (rows, c.hidden, c.eps),
        "attention": (tokens, c.heads, c.head, 1 / math.sqrt(c.head)),
        "gelu": (rows * c.intermediate,),
        "qkv": (rows, 3 * c.hidden, c.hidden),
        "out": (rows, c.hidden, c.hidden),
        "up": (rows, c.intermediate, c.hidden),
        "down": (rows, c.hidden, c.intermediate),
    }


def gelu_groups(n: int) -> Workgroups:
    """gelu.wgsl's workgroups for ``n`` elements, within the 65535 limit per dimension."""
    groups = math.ceil(n / 256)
    x = min(groups, MAX_GROUPS)
    return x, math.ceil(groups / x), 1


def dispatches(c: BertConfig, batch: int, tokens: int) -> list[tuple[str, Workgroups]]:
    """Each dispatch's pipeline and workgroups for a forward pass, in :func:`bind_groups`'
    order."""
    rows, values = batch * tokens, params(c, batch, tokens)
    sizes: dict[str, Callable[[Params], Workgroups]] = {
        "embed": lambda p: (math.ceil(c.hidden / 64), rows, 1),
        "norm": lambda p: (rows, 1, 1),
        "residual_norm": lambda p: (rows, 1, 1),
        "linear": lambda p: (math.ceil(int(p[1]) / 64), math.ceil(rows / 32), 1),
        "attention": lambda p: (tokens, c.heads, batch),
        "gelu": lambda p: gelu_groups(int(p[0])),
    }
    return [(b.pipeline, sizes[b.pipeline](values[b.params])) for b in bind_groups(c)]


def passes(batch: int, tokens: int, max_rows: int) -> list[slice]:
    """The sequences of each forward pass among ``batch`` sequences of ``tokens``: at most
    ``max_rows`` token rows a pass, but at least one sequence (none without tokens)."""
    step = max(1, max_rows // max(tokens, 1))
    return [slice(i, i + step) for i in range(0, batch if tokens else 0, step)]


def grown(rows: int, held: int, max_rows: int) -> int:
    """How many rows to allocate activations for when a pass needs ``rows`` and ``held`` are
    allocated: at least double, so that growing batches reallocate rarely."""
    return min(max(rows, 2 * held), max_rows)
