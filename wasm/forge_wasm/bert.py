"""A BERT sentence encoder (all-MiniLM-L6-v2) on WebGPU: the server ``wgpu`` backend's
dispatch plan (``bert_plan``, which the wheel carries byte for byte from
``kernel/backends/bert_plan.py``) on the same WGSL kernels, its weights read from a
safetensors file the page fetched, and no numpy. What is left here is the plumbing: JS
buffers, bytes and the page's token ids."""

from __future__ import annotations

import asyncio
import functools
import struct
from typing import TYPE_CHECKING, Any

from js import Float32Array

from . import safetensors
from .errors import ModelError
from .gpu import Kernels, open_device

if TYPE_CHECKING:  # the wheel's bert_plan is this very file, copied in by wasm/setup.py
    from ferrousforge.backends import bert_plan
else:
    from . import bert_plan


def read_config(text: str) -> bert_plan.BertConfig:
    """The encoder's config from config.json's text, or :class:`ModelError`."""
    try:
        return bert_plan.BertConfig.parse(text)
    except bert_plan.ConfigError as e:
        raise ModelError(f"cannot read a BERT config from config.json: {e}") from e
    except bert_plan.Unsupported as e:
        raise ModelError(
            f"the Pyodide Mold runs BERT encoders with exact GELU; this one has {e}"
        ) from e


class Weights:
    """The tensors of a safetensors file held by the page (a JS ``Uint8Array``), uploaded to
    storage buffers as f32: F32 straight from the page's bytes, F16/BF16 widened in Python."""

    def __init__(self, kernels: Kernels, data: Any) -> None:
        self.k, self.data = kernels, data
        self.tensors = safetensors.header(self._read, int(data.length))
        self.prefix = bert_plan.prefix(self.tensors)

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
    """A BERT encoder's weights on the GPU, and its forward pass as one submit of dispatches,
    as ``bert_plan`` lays them out.

    Activation buffers are sized for the most rows seen so far and reused while they fit.
    """

    def __init__(self, kernels: Kernels, config: bert_plan.BertConfig, weights: Weights) -> None:
        self.k, self.config = kernels, config
        self.buffers: dict[str, Any] = {}
        for w in bert_plan.weights(config):
            tensors = [weights.get(name, *w.shape) for name in w.tensors]
            self.buffers[w.buffer] = weights.upload(*tensors)
        self.vocab = weights.get(bert_plan.WORDS, None, config.hidden).shape[0]
        self.params = {n: kernels.uniform() for n in bert_plan.PARAMS}
        self.max_rows = config.max_rows(int(kernels.device.limits.maxStorageBufferBindingSize))
        self.max_tokens = config.max_tokens
        self._rows = 0
        self._groups: list[Any] = []
        self._lock = asyncio.Lock()  # one forward at a time: they share the activations

    @functools.cached_property
    def pipes(self) -> dict[str, Any]:
        """The pipelines by our name (compiled ahead by :func:`open_encoder`)."""
        return {key: self.k.pipeline(name, **c) for key, (name, c) in bert_plan.PIPELINES.items()}

    async def hidden(self, rows: list[list[int]], tokens: int) -> Any:
        """Last hidden states, a JS ``Float32Array`` (batch, tokens, hidden), of token id
        ``rows`` padded to ``tokens``, in as many forward passes as the buffer limits need."""
        if tokens > self.max_tokens:
            raise ModelError(f"{tokens} tokens do not fit this model's {self.max_tokens}")
        if any(len(r) > tokens for r in rows):
            raise ModelError(f"a row has more than the {tokens} tokens asked for")
        if any(not 0 <= t < self.vocab for r in rows for t in r):
            raise ModelError(f"token ids fall outside the {self.vocab}-word vocabulary")
        width = tokens * self.config.hidden
        out = Float32Array.new(len(rows) * width)
        async with self._lock:
            for part in bert_plan.passes(len(rows), tokens, self.max_rows):
                out.set(await self.forward(rows[part], tokens), part.start * width)
        return out

    def _grow(self, rows: int) -> None:
        """Allocate activations for ``rows`` token rows and bind them to every dispatch."""
        k, c = self.k, self.config
        self._rows = rows
        self.buffers |= {n: k.storage(size) for n, size in bert_plan.activations(c, rows).items()}
        self.out = k.staging(4 * rows * c.hidden)
        self._groups = [
            k.bind(*g.resolve(self.pipes, self.params, self.buffers))
            for g in bert_plan.bind_groups(c)
        ]

    async def forward(self, ids: list[list[int]], tokens: int) -> Any:
        """One pass of :meth:`hidden`: ``len(ids) · tokens`` must be at most ``max_rows``."""
        batch = len(ids)
        rows = batch * tokens
        k, c, b = self.k, self.config, self.buffers
        k.watch()
        if rows > self._rows:
            self._grow(bert_plan.grown(rows, self._rows, self.max_rows))
        flat = [t for r in ids for t in (*r, *[0] * (tokens - len(r)))]
        mask = [int(i < len(r)) for r in ids for i in range(tokens)]
        k.write(b["ids"], 0, struct.pack(f"<{rows}I", *flat))
        k.write(b["types"], 0, bytes(4 * rows))  # one segment: token type 0 throughout
        k.write(b["mask"], 0, struct.pack(f"<{rows}I", *mask))
        for name, fields in bert_plan.params(c, batch, tokens).items():
            k.set_params(self.params[name], *fields)
        plan = bert_plan.dispatches(c, batch, tokens)
        steps = [(self.pipes[p], g, n) for (p, n), g in zip(plan, self._groups, strict=True)]
        k.run(steps, copy=(b[bert_plan.OUTPUT], self.out, 4 * rows * c.hidden))
        await k.check("the forward pass")
        return await k.read(self.out, rows * c.hidden)


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
    config = read_config(config_json)
    kernels = Kernels(await open_device())
    kernels.watch()
    compiled = None
    try:
        weights = Weights(kernels, data)  # reads the header: fails fast on a bad file
        compiled = kernels.compile(bert_plan.PIPELINES.values())
        bert = Bert(kernels, config, weights)  # uploads the weights while the GPU compiles
        await compiled
        await kernels.check("the model's buffers and pipelines")
    except BaseException:
        if compiled is not None:
            compiled.cancel()
        kernels.device.destroy()
        raise
    return Encoder(bert)
