"""The jax backend: the jitted ``jax.numpy`` forward against transformers' BertModel on a tiny
random BERT (fast), then minilm:l6 against the torch reference on cpu and, where jax sees a
GPU, on cuda against the cpu (slow tier)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.backends import Backends
from ferrousforge.devices import choose, cpu_device
from ferrousforge.errors import DeviceUnavailable, InvalidModelFile, MissingExtra, UnsupportedFormat
from ferrousforge.mold import LoadOptions
from ferrousforge.schema import ModelMetadata
from ferrousforge.store.manifest import Manifest

from .vectors import assert_matches, cosine

SENTENCES = ["a cat sits", "a kitten is sitting", "stock market", "The quick brown fox jumps."]
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="the jax extra is not installed"
)


def test_bucket_shapes() -> None:
    from ferrousforge.backends.jax_backend import bucket

    assert [bucket(n, 512) for n in (0, 1, 3, 8, 9, 100, 128, 129, 300, 500)] == [
        1, 1, 4, 8, 16, 128, 128, 256, 384, 512,
    ]  # fmt: skip
    assert bucket(5, 8) == 8 and bucket(7, 6) == 7  # never under n, never over most unless n is


def test_a_missing_jax_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    found = Backends.discover()
    assert "jax" in found.names()
    m = Manifest(
        name="enc:st", source="t", format="safetensors", path="/x", sha256="0" * 64, size=1,
        metadata=ModelMetadata(),
    )  # fmt: skip
    with pytest.raises(MissingExtra, match=r"pip install 'ferrousforge\[jax\]'"):
        choose(m, found, LoadOptions(backend="jax"))
    with pytest.raises(MissingExtra, match=r"^jax is not installed"):
        found.get("jax").open(m, cpu_device("jax"), LoadOptions())


def test_jax_is_no_format_default_while_another_reader_is_there() -> None:
    from ferrousforge.backends.jax_backend import JaxBackend
    from ferrousforge.backends.null import NullBackend

    other: Any = NullBackend()
    other.formats = frozenset({"safetensors"})
    jax = JaxBackend()
    assert Backends([jax, other]).for_format("safetensors") is other
    if jax.available():
        assert Backends([jax]).for_format("safetensors") is jax
    found = Backends.discover()
    if found.get("torch").available():
        assert found.for_format("safetensors").name == "torch"  # as before jax came


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32, 4 heads) saved by transformers as safetensors."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    return folder


def _inputs() -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(1)
    ids = rng.integers(1, 60, size=(3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:], mask[2, 3:] = 0, 0  # padded rows, as the encoders batch them
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[0, 5:] = 1
    return ids, types, mask


@needs_jax
def test_the_forward_matches_transformers(tiny_bert: Path) -> None:
    import numpy as np
    import torch
    from transformers import BertModel

    from ferrousforge.backends import safetensors_file
    from ferrousforge.backends.jax_backend import compiled, read_config, weights

    ids, types, mask = _inputs()
    model = BertModel.from_pretrained(str(tiny_bert)).eval()
    with torch.inference_mode():
        args = {
            name: torch.from_numpy(v)
            for name, v in (("input_ids", ids), ("token_type_ids", types), ("attention_mask", mask))
        }
        want = model(**args).last_hidden_state.numpy()
    config = read_config(tiny_bert / "config.json")
    params = weights(config, safetensors_file.load(tiny_bert / "model.safetensors"))
    feed = [v.astype(np.int32) for v in (ids, types, mask)]
    got = np.asarray(compiled()["hidden"](config, params, *feed))
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() < 2e-5  # padding is masked out as in BERT
    pooled = np.asarray(compiled()["embed"](config, params, *feed))
    m = mask[..., None]
    mean = (want * m).sum(1) / m.sum(1)
    assert np.abs(pooled - mean / np.linalg.norm(mean, axis=1, keepdims=True)).max() < 2e-5
    alone = np.asarray(compiled()["embed"](config, params, *(v[2:3, :3] for v in feed)))
    assert np.abs(alone[0] - pooled[2]).max() < 2e-6  # padding changes nothing


@needs_jax
def test_bad_configs_and_weights_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    from ferrousforge.backends import safetensors_file
    from ferrousforge.backends.jax_backend import read_config, weights

    config = json.loads((tiny_bert / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"hidden_act": "gelu_new"}))
    with pytest.raises(UnsupportedFormat, match=r"jax backend runs BERT encoders.*gelu_new"):
        read_config(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(InvalidModelFile, match="cannot read a BERT config"):
        read_config(tmp_path / "config.json")
    wide = read_config(tiny_bert / "config.json")
    tensors = safetensors_file.load(tiny_bert / "model.safetensors")
    with pytest.raises(InvalidModelFile, match="has shape"):
        weights(type(wide)(**(vars(wide) | {"intermediate": 48})), tensors)
    tensors.pop("embeddings.LayerNorm.bias")
    with pytest.raises(InvalidModelFile, match=r"no tensor 'embeddings\.LayerNorm\.bias'"):
        weights(wide, tensors)


# The slow tier: minilm:l6 from the real-model test home.


@pytest.fixture(scope="module")
def engine(minilm_engine: ff.Engine) -> ff.Engine:
    if not minilm_engine.backends.get("jax").available():
        pytest.skip("the jax extra is not installed")
    return minilm_engine


@pytest.fixture(scope="module")
def reference(engine: ff.Engine) -> list[list[float]]:
    engine.unload("minilm:l6")
    engine.load("minilm:l6", backend="torch", device="cpu")
    vectors = engine.embed("minilm:l6", SENTENCES).embeddings
    engine.unload("minilm:l6")
    return vectors


def cuda_or_skip(engine: ff.Engine) -> str:
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError as e:  # a CPU-only jaxlib, or no GPU (a jax[cuda12] install needs one)
        pytest.skip(f"jax sees no GPU here ({e})")
    try:
        jax.devices("cuda")
    except RuntimeError as e:
        pytest.skip(f"jax's GPUs {gpus} are no CUDA devices ({e})")
    seen = [d.id for d in engine.backends.get("jax").devices()]
    assert "cuda:0" in seen, f"jax sees {gpus} but the backend lists only {seen}"
    return "cuda:0"


@pytest.mark.slow
def test_jax_matches_torch_and_keeps_the_semantics(
    engine: ff.Engine, reference: list[list[float]]
) -> None:
    engine.load("minilm:l6", backend="jax", device="cpu")
    try:
        assert ("jax", "cpu") in {(m.backend, m.device) for m in engine.ps()}
        got = engine.embed("minilm:l6", SENTENCES).embeddings
        assert [len(v) for v in got] == [384] * 4
        assert_matches(reference, got, 1e-5)
        assert cosine(got[0], got[1]) >= 0.7 and cosine(got[0], got[2]) <= 0.2
        # many texts of many lengths: sorted, sliced and padded, yet each as alone
        texts = [" ".join(["word"] * n) + f" {n}" for n in (1, 40, 3, 90, 7, 2, 15, 0, 60, 5)]
        many = engine.embed("minilm:l6", texts).embeddings
        for text, vector in zip(texts[:3], many[:3], strict=True):
            alone = engine.embed("minilm:l6", text).embeddings[0]
            assert max(abs(x - y) for x, y in zip(alone, vector, strict=True)) <= 1e-5
        long = engine.embed("minilm:l6", "word " * 2000).embeddings[0]  # cut to 256 tokens
        assert len(long) == 384
        assert "jax" in next(d for d in engine.devices() if d.id == "cpu").backends
        with pytest.raises(DeviceUnavailable, match="'cuda:7' is not available to jax"):
            engine.load("minilm:l6", backend="jax", device="cuda:7")
    finally:
        engine.unload("minilm:l6")


@pytest.mark.slow
def test_parity_lists_jax(engine: ff.Engine) -> None:
    from ferrousforge.parity import run

    rows = {(r.backend, r.device): r for r in run(engine, "minilm:l6", backends=["jax"])}
    assert ("jax", "cpu") in rows
    for row in rows.values():
        assert row.ok, row
        assert row.model == "minilm:l6"  # jax reads the safetensors themselves
    assert engine.ps() == []


@pytest.mark.slow
def test_forge_embed_on_jax(engine: ff.Engine) -> None:
    env = os.environ | {"FORGE_HOME": str(engine.settings.home), "FORGE_THREADS": "2"}
    cmd = [sys.executable, "-m", "ferrousforge", "embed", "minilm:l6", "a cat sits", "--json"]
    r = subprocess.run(
        [*cmd, "--backend", "jax"], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    (vector,) = json.loads(r.stdout)["embeddings"]
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1) < 1e-5


@pytest.mark.slow
def test_jax_on_cuda_matches_the_cpu(engine: ff.Engine) -> None:
    device = cuda_or_skip(engine)
    engine.unload("minilm:l6")
    engine.load("minilm:l6", backend="jax", device="cpu")
    cpu = engine.embed("minilm:l6", SENTENCES).embeddings
    engine.unload("minilm:l6")
    engine.load("minilm:l6", backend="jax", device=device)
    try:
        assert ("jax", device) in {(m.backend, m.device) for m in engine.ps()}
        got = engine.embed("minilm:l6", SENTENCES).embeddings
    finally:
        engine.unload("minilm:l6")
    assert_matches(cpu, got, 1e-5)
    assert cosine(got[0], got[1]) >= 0.7 and cosine(got[0], got[2]) <= 0.2
