"""The TVM backend: compile, cache, tune and run (slow tier: real TVM, real minilm:l6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.backends import tvm_compile
from ferrousforge.backends.tvm_compile import Cache, Source, bucket, parse_target
from ferrousforge.convert import convert
from ferrousforge.errors import ConfigError, InvalidModelFile, UnsupportedFormat
from ferrousforge.progress import Progress

from .vectors import assert_matches

pytest.importorskip("tvm", reason="the tvm extra is not installed")
pytestmark = pytest.mark.slow
SENTENCES = ["a cat sits", "a kitten is sitting", "stock market", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def engine(minilm_engine: ff.Engine) -> ff.Engine:
    return minilm_engine


def test_targets_and_buckets() -> None:
    assert parse_target("llvm", threads=2) == {"kind": "llvm", "num-cores": 2}
    flagged = parse_target("llvm -mcpu=x86-64 -opt-level=3")
    assert flagged.items() >= {"kind": "llvm", "mcpu": "x86-64", "opt-level": 3}.items()
    assert parse_target('{"kind": "cuda", "arch": "sm_90"}')["arch"] == "sm_90"
    with pytest.raises(ConfigError, match="bad TVM target"):
        parse_target("vulkanish")
    assert tvm_compile.target_slug(flagged) != tvm_compile.target_slug({"kind": "llvm"})
    assert bucket(1, 3, 256) == (1, 16)
    assert bucket(5, 17, 256) == (8, 32)
    assert bucket(32, 300, 256) == (32, 256)


def test_convert_to_tvm_loads_matches_and_reuses_the_cache(
    engine: ff.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[Progress] = []
    m = convert(engine.store, "minilm:l6", "tvm", events.append, shapes=[(8, 16)])
    assert (m.format, m.parent, m.name) == ("tvm", "minilm:l6", "minilm:l6-tvm")
    spec = json.loads((m.file / "tvm.json").read_text())
    assert spec["shapes"] == [[8, 16]] and spec["target"]["kind"] == "llvm"
    assert (m.file / "model.onnx").is_file() and (m.file / "tokenizer.json").is_file()
    assert engine.show("minilm:l6").file.is_dir()  # the source is untouched
    built = list((engine.store.home / "cache/tvm").glob("*/llvm-*/8x16-t0/lib.so"))
    assert built, "convert compiles the shapes it lists into the store's cache"

    reference = engine.embed("minilm:l6", SENTENCES).embeddings
    engine.unload("minilm:l6-tvm")

    def no_compiling(*args: object, **kw: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(tvm_compile, "_compile", no_compiling)
    engine.load("minilm:l6-tvm")
    assert next(p for p in engine.ps() if p.name == "minilm:l6-tvm").backend == "tvm"
    assert_matches(reference, engine.embed("minilm:l6-tvm", SENTENCES).embeddings, 1e-5)


def test_safetensors_through_torch_export(engine: ff.Engine) -> None:
    reference = engine.embed("minilm:l6", SENTENCES).embeddings
    engine.unload("minilm:l6")
    engine.load("minilm:l6", backend="tvm", device="cpu")
    try:
        got = engine.embed("minilm:l6", SENTENCES).embeddings
        assert next(p for p in engine.ps() if p.name == "minilm:l6").backend == "tvm"
    finally:
        engine.unload("minilm:l6")
    assert_matches(reference, got, 1e-5)
    cached = engine.store.home / "cache/tvm" / engine.show("minilm:l6").sha256[:32]
    assert list(cached.glob("llvm-*/8x16-t0/lib.so"))


def test_bad_inputs_are_clear_and_the_engine_keeps_serving(
    engine: ff.Engine, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="bad TVM target"):
        convert(engine.store, "minilm:l6", "tvm", target="nonsense")
    with pytest.raises(UnsupportedFormat, match="targets: onnx, tvm"):
        convert(engine.store, "minilm:l6", "tflite")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not really protobuf")
    cache = Cache(tmp_path / "cache", Source(broken, "0" * 64, "onnx"), parse_target("llvm"))
    with pytest.raises(InvalidModelFile, match=r"broken\.onnx"):
        cache.build((1, 16))
    assert not list((tmp_path / "cache").rglob("lib.so"))
    assert len(engine.embed("minilm:l6", ["still serving"]).embeddings[0]) == 384


def tiny_encoder(path: Path, vocab: int = 50, dims: int = 8) -> tuple[Any, Any]:
    """An ONNX 'encoder': token embedding, then one dense layer (numpy weights returned)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.standard_normal((vocab, dims)).astype(np.float32)
    weight = rng.standard_normal((dims, dims)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
            helper.make_node("MatMul", ["embedded", "weight"], ["last_hidden_state"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", dims]
            )
        ],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "weight")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return table, weight


def test_tuning_reports_progress_and_the_tuned_build_wins(tmp_path: Path) -> None:
    import numpy as np
    import tvm
    from tvm import relax

    table, weight = tiny_encoder(tmp_path / "tiny.onnx")
    cache = Cache(
        tmp_path / "cache", Source(tmp_path / "tiny.onnx", "1" * 64, "onnx"), parse_target("llvm")
    )
    events: list[Progress] = []
    untuned = cache.build((1, 16))
    tuned = cache.build((1, 16), trials=4, progress=events.append)
    assert tuned.name == "1x16-t4" and untuned.name == "1x16-t0"
    steps = [e for e in events if e.status == "tuning 1x16"]
    assert steps[0].completed == 0 and steps[-1].completed == 4 and steps[-1].unit == "trial"
    records = (tuned / "tune" / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= 2  # a measured schedule per tuned kernel
    assert cache.find((1, 16)) == tuned  # the most tuned build is the one loads pick

    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tuned / "lib.so")), tvm.cpu())
    params = [tvm.runtime.tensor(np.load(p)) for p in cache.params(tuned)]
    out = vm["main"](tvm.runtime.tensor(ids), *params)
    out = out if hasattr(out, "numpy") else out[0]
    np.testing.assert_allclose(out.numpy(), table[ids] @ weight, rtol=1e-5, atol=1e-5)


def test_forge_convert_cli_errors(engine: ff.Engine) -> None:
    env = os.environ | {"FORGE_HOME": str(engine.settings.home)}
    base = [sys.executable, "-m", "ferrousforge", "convert", "minilm:l6", "--to", "tvm"]
    bad = subprocess.run(
        [*base, "--shapes", "32by16"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "bad shape '32by16'" in bad.stderr
    bad = subprocess.run(
        [*base, "--target", "nonsense"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "bad TVM target" in bad.stderr
    assert "Traceback" not in bad.stderr
