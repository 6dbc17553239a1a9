"""The WGSL kernels against numpy references on a real wgpu adapter, a tiny random BERT through
the wgpu backend's forward pass, and the numpy-only safetensors reader."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferrousforge.backends import safetensors_file, wgsl
from ferrousforge.backends.encoders import mean_pool
from ferrousforge.errors import ContextOverflow, InvalidModelFile, UnsupportedFormat

RNG = np.random.default_rng(7)
erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)


def _open(device_id: str | None = None) -> Any:
    pytest.importorskip("wgpu", reason="wgpu is not installed")
    from ferrousforge.backends.wgpu_backend import Kernels, adapters

    found = adapters()
    if not found:
        pytest.skip("wgpu finds no adapter here")
    return Kernels(found[device_id or next(iter(found))].request_device_sync())


@pytest.fixture(scope="module")
def k() -> Iterator[Any]:
    kernels = _open()
    yield kernels
    kernels.device.destroy()


def dispatch(k: Any, name: str, params: tuple[Any, ...], buffers: list[Any], groups: Any,
             **constants: Any) -> None:  # fmt: skip
    pipe = k.pipeline(name, **constants)
    uniform = k.uniform()
    k.set_params(uniform, *params)
    k.run([(pipe, k.bind(pipe, uniform, *buffers), groups)])


def f32(*shape: int, scale: float = 1.0) -> Any:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def test_every_kernel_is_a_file() -> None:
    assert wgsl.names() == ["attention", "embed", "gelu", "layernorm", "matmul", "meanpool"]
    for name in wgsl.names():
        assert "@compute" in wgsl.source(name) and "fn main(" in wgsl.source(name)


@pytest.mark.parametrize(("m", "n", "kk"), [(37, 50, 23), (64, 128, 48), (1, 1, 1), (5, 70, 33)])
def test_matmul(k: Any, m: int, n: int, kk: int) -> None:
    x, w, b = f32(m, kk), f32(n, kk), f32(n)
    sentinel = np.full(m * n + 64, 7.0, np.float32)  # nothing past m·n may be written
    y = k.upload(sentinel)
    groups = (math.ceil(n / 64), math.ceil(m / 32), 1)
    dispatch(k, "matmul", (m, n, kk), [k.upload(x), k.upload(w), k.upload(b), y], groups)
    got = k.read(y, m * n + 64)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(got[: m * n].reshape(m, n), want, rtol=1e-5, atol=1e-5)
    assert (got[m * n :] == 7.0).all()


def test_gelu_is_the_exact_erf_gelu(k: Any) -> None:
    from ferrousforge.backends.wgpu_backend import gelu_groups

    x = np.concatenate([np.linspace(-10, 10, 1001), f32(499, scale=3)]).astype(np.float32)
    h = k.upload(x)
    dispatch(k, "gelu", (len(x),), [h], (3, 2, 1))  # 6 · 256 > 1500: the y dimension is used
    got = k.read(h, len(x)).astype(np.float64)
    xd = x.astype(np.float64)
    want = 0.5 * xd * erfc(-xd / math.sqrt(2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-7)
    tail = xd < -3  # tiny values, and still accurate relative to their size
    np.testing.assert_allclose(got[tail], want[tail], rtol=2e-5)
    assert gelu_groups(1) == (1, 1, 1) and gelu_groups(65535 * 256 + 1) == (65535, 2, 1)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dim", [384, 100])
def test_layernorm(k: Any, residual: bool, dim: int) -> None:
    rows, eps = 5, 1e-12
    x, r = f32(rows, dim, scale=3) + 100, f32(rows, dim)  # a large mean tests the two passes
    gamma, beta = f32(dim) + 1, f32(dim)
    y = k.storage(rows * dim * 4)
    buffers = [k.upload(x), k.upload(gamma), k.upload(beta), y, k.upload(r)]
    dispatch(k, "layernorm", (rows, dim, eps), buffers, (rows, 1, 1), RESIDUAL=residual)
    v = x.astype(np.float64) + (r if residual else 0)
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    want = (v - mu) / np.sqrt(var + eps) * gamma + beta
    np.testing.assert_allclose(k.read(y, rows * dim).reshape(rows, dim), want, atol=2e-5)


def attention_reference(qkv: Any, mask: Any, heads: int) -> Any:
    batch, tokens, three_h = qkv.shape
    dh = three_h // 3 // heads
    split = qkv.astype(np.float64).reshape(batch, tokens, 3, heads, dh).transpose(2, 0, 3, 1, 4)
    q, key, v = split
    scores = q @ key.transpose(0, 1, 3, 2) / math.sqrt(dh)
    scores += np.where(mask[:, None, None, :] == 0, -np.inf, 0)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, heads * dh)


@pytest.mark.parametrize(("tokens", "heads", "dh"), [(7, 3, 8), (70, 2, 80)])
def test_attention_masks_padding(k: Any, tokens: int, heads: int, dh: int) -> None:
    batch = 2
    qkv = f32(batch, tokens, 3 * heads * dh)
    mask = np.ones((batch, tokens), np.uint32)
    mask[1, tokens // 2 :] = 0  # the second sequence is padded
    out = k.storage(batch * tokens * heads * dh * 4)
    params = (tokens, heads, dh, 1 / math.sqrt(dh))
    dispatch(k, "attention", params, [k.upload(qkv), k.upload(mask), out], (tokens, heads, batch))
    got = k.read(out, batch * tokens * heads * dh).reshape(batch, tokens, heads * dh)
    np.testing.assert_allclose(got, attention_reference(qkv, mask, heads), atol=1e-5)


def test_embed_gathers_and_adds(k: Any) -> None:
    batch, tokens, hidden, vocab = 2, 5, 70, 11
    ids = RNG.integers(0, vocab, (batch, tokens)).astype(np.uint32)
    types = RNG.integers(0, 2, (batch, tokens)).astype(np.uint32)
    word, pos, tt = f32(vocab, hidden), f32(tokens + 3, hidden), f32(2, hidden)
    y = k.storage(batch * tokens * hidden * 4)
    buffers = [k.upload(ids), k.upload(types), k.upload(word), k.upload(pos), k.upload(tt), y]
    groups = (math.ceil(hidden / 64), batch * tokens, 1)
    dispatch(k, "embed", (batch * tokens, tokens, hidden), buffers, groups)
    want = word[ids] + pos[:tokens] + tt[types]
    got = k.read(y, batch * tokens * hidden).reshape(batch, tokens, hidden)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_meanpool_matches_the_encoders_pooling(k: Any) -> None:
    batch, tokens, hidden = 3, 6, 200
    h = f32(batch, tokens, hidden)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.uint32)
    out = k.storage(batch * hidden * 4)
    dispatch(k, "meanpool", (tokens, hidden), [k.upload(h), k.upload(mask), out], (batch, 1, 1))
    got = k.read(out, batch * hidden).reshape(batch, hidden)
    np.testing.assert_allclose(got, np.array(mean_pool(h, mask)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


# A tiny random BERT: the forward pass's wiring against a float64 numpy reference.
CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "hidden_size": 48,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 16,
}


def tiny_bert(prefix: str = "") -> dict[str, Any]:
    h, inter = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    t = {
        "embeddings.word_embeddings.weight": f32(30, h),
        "embeddings.position_embeddings.weight": f32(16, h),
        "embeddings.token_type_embeddings.weight": f32(2, h),
        "embeddings.LayerNorm.weight": f32(h, scale=0.1) + 1,
        "embeddings.LayerNorm.bias": f32(h, scale=0.1),
    }
    shapes = {
        "attention.self.query": (h, h),
        "attention.self.key": (h, h),
        "attention.self.value": (h, h),
        "attention.output.dense": (h, h),
        "intermediate.dense": (inter, h),
        "output.dense": (h, inter),
    }
    for i in range(CONFIG["num_hidden_layers"]):
        for name, shape in shapes.items():
            t[f"encoder.layer.{i}.{name}.weight"] = f32(*shape, scale=1 / math.sqrt(shape[1]))
            t[f"encoder.layer.{i}.{name}.bias"] = f32(shape[0], scale=0.1)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"encoder.layer.{i}.{norm}.weight"] = f32(h, scale=0.1) + 1
            t[f"encoder.layer.{i}.{norm}.bias"] = f32(h, scale=0.1)
    return {prefix + name: v for name, v in t.items()}


def bert_reference(t: dict[str, Any], ids: Any, types: Any, mask: Any) -> Any:
    t = {name.removeprefix("bert."): v.astype(np.float64) for name, v in t.items()}

    def norm(x: Any, name: str) -> Any:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * t[name + ".weight"] + t[name + ".bias"]

    def linear(x: Any, name: str) -> Any:
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    e = "embeddings."
    x = t[e + "word_embeddings.weight"][ids] + t[e + "position_embeddings.weight"][: ids.shape[1]]
    x = norm(x + t[e + "token_type_embeddings.weight"][types], e + "LayerNorm")
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        qkv = np.concatenate(
            [linear(x, p + f"attention.self.{n}") for n in ("query", "key", "value")], -1
        )
        ctx = attention_reference(qkv, mask, CONFIG["num_attention_heads"])
        x = norm(linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        up = linear(x, p + "intermediate.dense")
        up = 0.5 * up * (1 + erf(up / math.sqrt(2)))
        x = norm(linear(up, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def batch_of(batch: int, tokens: int) -> tuple[Any, Any, Any]:
    ids = RNG.integers(1, 30, (batch, tokens))
    types = RNG.integers(0, 2, (batch, tokens))
    mask = np.ones((batch, tokens), np.int64)
    for row in range(1, batch):
        mask[row, max(1, tokens - row) :] = 0
    return ids, types, mask


def load_tiny(k: Any, tmp_path: Path, prefix: str) -> tuple[Any, dict[str, Any]]:
    from safetensors.numpy import save_file

    from ferrousforge.backends.wgpu_backend import Bert, BertConfig

    tensors = tiny_bert(prefix)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    loaded = safetensors_file.load(tmp_path / "model.safetensors")
    return Bert(k, BertConfig.read(tmp_path / "config.json"), loaded), tensors


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_tiny_bert_forward_matches_numpy(k: Any, tmp_path: Path, prefix: str) -> None:
    pytest.importorskip("safetensors")
    bert, tensors = load_tiny(k, tmp_path, prefix)
    for shape in [(2, 5), (3, 9), (1, 3)]:  # grows its buffers, then reuses them
        ids, types, mask = batch_of(*shape)
        got = bert.hidden(ids, types, mask)
        assert got.shape == (*shape, 48) and got.dtype == np.float32
        np.testing.assert_allclose(got, bert_reference(tensors, ids, types, mask), atol=1e-4)
    bert.max_rows = 7  # 4 sequences of 3 tokens: two forward passes
    ids, types, mask = batch_of(4, 3)
    np.testing.assert_allclose(
        bert.hidden(ids, types, mask), bert_reference(tensors, ids, types, mask), atol=1e-4
    )
    assert bert.hidden(ids[:0], types[:0], mask[:0]).shape == (0, 3, 48)
    with pytest.raises(ContextOverflow, match="17 tokens"):
        bert.hidden(*batch_of(1, 17))
    with pytest.raises(InvalidModelFile, match="30-word vocabulary"):
        bert.hidden(ids + 30, types, mask)


def test_tiny_bert_on_every_adapter(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from ferrousforge.backends.wgpu_backend import adapters

    _open()  # skips without wgpu or an adapter
    ids, types, mask = batch_of(2, 4)
    for device_id in adapters():
        k = _open(device_id)
        bert, tensors = load_tiny(k, tmp_path, "")
        want = bert_reference(tensors, ids, types, mask)
        np.testing.assert_allclose(bert.hidden(ids, types, mask), want, atol=1e-4)
        k.device.destroy()


def test_bert_config_and_tensors_are_checked(k: Any, tmp_path: Path) -> None:
    from ferrousforge.backends.wgpu_backend import Bert, BertConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG | {"hidden_act": "gelu_new"}))
    with pytest.raises(UnsupportedFormat, match="hidden_act='gelu_new'"):
        BertConfig.read(path)
    path.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InvalidModelFile, match="cannot read a BERT config"):
        BertConfig.read(path)
    path.write_text(json.dumps(CONFIG))
    tensors = tiny_bert()
    del tensors["encoder.layer.1.output.dense.bias"]
    with pytest.raises(InvalidModelFile, match=re.escape("'encoder.layer.1.output.dense.bias'")):
        Bert(k, BertConfig.read(path), tensors)


# The safetensors reader, against files the safetensors package writes.


def test_safetensors_round_trip(tmp_path: Path) -> None:
    numpy_io = pytest.importorskip("safetensors.numpy")
    tensors = {
        "f32": f32(3, 4),
        "f16": f32(5).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
        "i32": np.array([[7]], np.int32),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }
    path = tmp_path / "t.safetensors"
    numpy_io.save_file(tensors, path, metadata={"format": "pt"})
    got = safetensors_file.load(path)
    assert got.keys() == tensors.keys()
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want)


def write_raw(path: Path, header: dict[str, Any], data: bytes) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def test_bf16_is_widened_to_f32(tmp_path: Path) -> None:
    want = np.array([1.5, -2.0, 3.140625, 0.0], np.float32)
    bits = (want.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}
    got = safetensors_file.load(write_raw(tmp_path / "b.safetensors", header, bits))["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.reshape(2, 2))


def test_corrupt_safetensors_raise_invalid_model_file(tmp_path: Path) -> None:
    numpy_io = pytest.importorskip("safetensors.numpy")
    good = tmp_path / "good.safetensors"
    numpy_io.save_file({"a": f32(16, 16), "b": f32(4)}, good)
    raw = good.read_bytes()
    cases = {
        "truncated": (raw[:-10], "lies past the end"),
        "short": (raw[:5], "bad header length"),
        "huge header": ((10**12).to_bytes(8, "little") + raw[8:], "bad header length"),
        "not json": (raw[:8] + b"{" * (len(raw) - 8), "corrupt safetensors header"),
        "empty": (b"", "bad header length"),
    }
    for label, (data, message) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(data)
        with pytest.raises(InvalidModelFile, match=message) as info:
            safetensors_file.load(path)
        assert "\n" not in str(info.value), label
    entries: list[Any] = [
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},  # size mismatch
        {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}},
        {"a": {"dtype": "F32"}},
        {"a": "F32"},
        ["a"],
    ]
    for i, header in enumerate(entries):
        path = write_raw(tmp_path / f"entry{i}.safetensors", header, b"\0" * 8)
        with pytest.raises(InvalidModelFile, match=r"bad entry|not an object"):
            safetensors_file.load(path)
    f64 = {"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}
    with pytest.raises(UnsupportedFormat, match="is F64; readable: F32"):
        safetensors_file.load(write_raw(tmp_path / "f64.safetensors", f64, b"\0" * 8))
    with pytest.raises(InvalidModelFile, match="cannot read"):
        safetensors_file.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("backend", "description", "usable"),
    [
        ("OpenGL", "4.5 (Core Profile) Mesa 22.3.6", True),
        ("OpenGL", "3.3.0 NVIDIA 580.159.04", False),  # seen on an H200: no compute shaders
        ("OpenGL", "4.3.0 NVIDIA", True),
        ("OpenGLES", "OpenGL ES 3.0 Mesa", False),
        ("OpenGLES", "OpenGL ES 3.2 Mesa", True),
        ("Vulkan", "3.3 anything", True),
        ("OpenGL", "", True),  # unknown version: opening the device will say
    ],
)
def test_only_adapters_with_compute_shaders_are_devices(
    backend: str, description: str, usable: bool
) -> None:
    from ferrousforge.backends.wgpu_backend import computes

    assert computes({"backend_type": backend, "description": description}) is usable
