"""The jax backend (extra ``jax``): BERT-style sentence encoders such as all-MiniLM-L6-v2 as
one jitted forward written with ``jax.numpy``, on the CPU, or on CUDA GPUs when jax sees them
(a ``jax[cuda12]`` install). A model is a folder with ``config.json``, ``model.safetensors``
and ``tokenizer.json``, as for the wgpu backend, whose plan (:mod:`bert_plan`) names the
weights here too: its config rules, its tensor names, its query/key/value concatenation.

The forward pools on the device: embeddings, layer norm, each layer's attention (with the
padding mask) and GELU feed-forward under ``lax.scan``, then the masked mean and the L2
norm, so only one vector per text comes back. Batches are padded to a few bucket shapes, so
that a handful of compilations serve every batch; padded rows and tokens are masked out.

It also runs serialized ``jax.export`` programs (the ``jax`` format, ``.jaxexport`` files)
for the ``infer`` task (:mod:`jax_programs`): no other backend reads them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import (
    ContextOverflow,
    DeviceUnavailable,
    InvalidModelFile,
    MissingExtra,
    UnsupportedFormat,
)
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from . import bert_plan, safetensors_file
from .encoders import Batch, EncoderMold
from .tensor_mold import Specs

# Per-layer weights, stacked on a leading layer axis for lax.scan (bert_plan's names).
LAYER_WEIGHTS = ("qkv", "qkv_b", *bert_plan.LAYER)


def _jax() -> Any:
    # jax takes 75% of a GPU's memory at its first use unless told otherwise; the models of
    # the other backends share that GPU. Only the first import of jax in a process reads it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    return jax


def cuda_devices() -> list[Any]:
    """jax's CUDA devices, in their order (none without a CUDA-enabled jaxlib or a GPU)."""
    try:
        return list(_jax().devices("cuda"))
    except RuntimeError:  # "Unknown backend cuda" / "Backend 'cuda' failed to initialize"
        return []


def bucket(n: int, most: int) -> int:
    """The padded size for ``n`` (at least 1): a power of two up to 128, then a multiple of
    128, never over ``most`` (unless ``n`` is): few shapes, at most twice the work."""
    n = max(n, 1)
    size = 1 << (n - 1).bit_length() if n <= 128 else math.ceil(n / 128) * 128
    return max(n, min(size, most))


class JaxBackend:
    name = "jax"
    formats = frozenset({"safetensors", "jax"})
    # safetensors go to torch unless jax is asked for: it only embeds them. For the jax
    # format it is the only reader, so Backends.for_format picks it all the same.
    automatic = False

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("jax", "jaxlib", "tokenizers", "numpy"))

    def devices(self) -> list[Device]:
        found = [cpu_device(self.name)]
        for d in cuda_devices():
            stats = d.memory_stats() or {}
            total = stats.get("bytes_limit")
            free = None if total is None else total - stats.get("bytes_in_use", 0)
            found.append(Device(f"cuda:{d.id}", str(d.device_kind), total, free, (self.name,)))
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.5) + (64 << 20)

    def signature(self, manifest: Manifest) -> Specs:
        """A ``jax.export`` program's inputs and outputs (at pull); an encoder folder's stay
        as they are (it takes text, not tensors)."""
        if manifest.format != "jax":
            return manifest.metadata.input_shapes, manifest.metadata.output_shapes
        from .jax_programs import signature

        return signature(manifest.file)

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("jax", "jax")
        if manifest.format == "jax":
            from .jax_programs import JaxProgramMold

            return JaxProgramMold(manifest, device, opts, self.estimate_memory(manifest, opts))
        return JaxMold(manifest, device, opts, self.estimate_memory(manifest, opts))


def read_config(path: Path) -> bert_plan.BertConfig:
    """:meth:`bert_plan.BertConfig.parse` of ``path``, with our errors."""
    try:
        return bert_plan.BertConfig.parse(path.read_text())
    except (OSError, bert_plan.ConfigError) as e:
        raise InvalidModelFile(f"cannot read a BERT config from {path}: {e}") from e
    except bert_plan.Unsupported as e:
        raise UnsupportedFormat(
            f"the jax backend runs BERT encoders with exact GELU; {path} has {e}"
        ) from e


def weights(config: bert_plan.BertConfig, tensors: dict[str, Any]) -> dict[str, Any]:
    """The model's weights as numpy f32, by :func:`bert_plan.weights`' buffer names, each
    layer's stacked under its :data:`LAYER_WEIGHTS` name; shapes are checked against the
    config."""
    import numpy as np

    prefix = bert_plan.prefix(tensors)
    found: dict[str, Any] = {}
    for w in bert_plan.weights(config):
        try:
            # copies: the file's memory map must not back arrays that jax may alias
            arrays = [np.array(tensors[prefix + name], np.float32) for name in w.tensors]
        except KeyError as e:
            raise InvalidModelFile(f"model.safetensors has no tensor {e.args[0]!r}") from None
        want = (len(arrays) * w.shape[0], *w.shape[1:]) if w.shape[0] else w.shape
        data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        if len(data.shape) != len(want) or any(
            n is not None and n != got for n, got in zip(want, data.shape, strict=True)
        ):
            raise InvalidModelFile(
                f"model.safetensors: {', '.join(w.tensors)} has shape {data.shape}, "
                f"not {want} as config.json says"
            )
        found[w.buffer] = data
    for key in LAYER_WEIGHTS:
        found[key] = np.stack([found.pop(f"{i}.{key}") for i in range(config.layers)])
    return found


@functools.cache
def compiled() -> dict[str, Any]:
    """The jitted functions of ``(config, params, ids, types, mask)``: ``hidden``, the last
    hidden states, and ``embed``, the L2-normalized mean-pooled embeddings. One of each per
    process, so every model of a config reuses the compilations of each shape it has seen."""
    jax = _jax()
    jnp, lax = jax.numpy, jax.lax
    highest = lax.Precision.HIGHEST  # f32 products on GPUs too (not TF32)

    def norm(x: Any, weight: Any, bias: Any, eps: float) -> Any:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * lax.rsqrt(var + eps) * weight + bias

    def linear(x: Any, weight: Any, bias: Any) -> Any:  # weight: (out, in), as torch saves
        return jnp.einsum("bti,oi->bto", x, weight, precision=highest) + bias

    def forward(config: bert_plan.BertConfig, p: dict[str, Any], *inputs: Any) -> Any:
        ids, types, mask = inputs
        batch, tokens = ids.shape
        heads, head, eps = config.heads, config.head, config.eps
        x = p["word_embeddings"][ids] + p["token_type_embeddings"][types]
        x = norm(x + p["position_embeddings"][:tokens], p["embed_norm"], p["embed_norm_b"], eps)
        keep = (mask > 0)[:, None, None, :]  # (batch, 1, 1, keys)
        low = jnp.finfo(x.dtype).min  # as transformers masks: a row of padding stays finite

        def layer(h: Any, w: dict[str, Any]) -> tuple[Any, None]:
            qkv = linear(h, w["qkv"], w["qkv_b"]).reshape(batch, tokens, 3, heads, head)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=highest) / math.sqrt(head)
            probs = jax.nn.softmax(jnp.where(keep, scores, low), axis=-1)
            ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=highest)
            a = linear(ctx.reshape(batch, tokens, heads * head), w["out"], w["out_b"])
            h = norm(a + h, w["norm1"], w["norm1_b"], eps)
            up = jax.nn.gelu(linear(h, w["up"], w["up_b"]), approximate=False)
            h = norm(linear(up, w["down"], w["down_b"]) + h, w["norm2"], w["norm2_b"], eps)
            return h, None

        x, _ = lax.scan(layer, x, {key: p[key] for key in LAYER_WEIGHTS})
        return x

    def embed(config: bert_plan.BertConfig, p: dict[str, Any], *inputs: Any) -> Any:
        h, mask = forward(config, p, *inputs), inputs[2]
        m = mask[..., None].astype(h.dtype)
        pooled = (h * m).sum(1) / jnp.clip(m.sum(1), 1e-9, None)
        return pooled / jnp.clip(jnp.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    return {"hidden": jax.jit(forward, static_argnums=0), "embed": jax.jit(embed, static_argnums=0)}


class JaxMold(EncoderMold):
    backend = "jax"

    def _load_runtime(self) -> None:
        jax = _jax()
        if self.device == "cpu":
            target = jax.devices("cpu")[0]
        else:
            by_id = {f"cuda:{d.id}": d for d in cuda_devices()}
            if self.device not in by_id:
                raise DeviceUnavailable(
                    f"jax has no {self.device}; available: {', '.join(['cpu', *by_id])}"
                )
            target = by_id[self.device]
        folder = self.path if self.path.is_dir() else self.path.parent
        self._config = read_config(folder / "config.json")
        tensors = safetensors_file.load(folder / "model.safetensors")
        params = weights(self._config, tensors)
        self._vocab = len(params["word_embeddings"])
        self._target = target
        self._params = jax.device_put(params, target)

    def _run(self, name: str, batch: Batch) -> Any:
        """``compiled()[name]`` on the batch padded to its bucket shape, as numpy: the rows
        (and for ``hidden`` the tokens) of the batch only."""
        import numpy as np

        rows, tokens = batch.input_ids.shape
        most = self._config.max_tokens
        if tokens > most:
            raise ContextOverflow(tokens, most)
        ids = batch.input_ids
        if ids.size and (ids.min() < 0 or ids.max() >= self._vocab):
            raise InvalidModelFile(f"token ids fall outside the {self._vocab}-word vocabulary")
        shape = (bucket(rows, self.slice_rows), bucket(tokens, most))
        feed = []
        for values in (ids, batch.token_type_ids, batch.attention_mask):
            array = np.zeros(shape, np.int32)
            array[:rows, :tokens] = values
            feed.append(_jax().device_put(array, self._target))
        out = np.asarray(compiled()[name](self._config, self._params, *feed))
        return out[:rows, :tokens] if name == "hidden" else out[:rows]

    def _hidden(self, batch: Batch) -> Any:
        return self._run("hidden", batch)

    def _pooled(self, batch: Batch) -> list[list[float]]:
        return self._run("embed", batch).astype(float).tolist()  # type: ignore[no-any-return]

    def _release(self) -> None:
        super()._release()
        self.__dict__.pop("_params", None)
