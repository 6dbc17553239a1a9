"""minilm:l6 on the torch and onnx backends (slow tier: real models, real runtimes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ferrousforge as ff
from ferrousforge.convert import convert
from ferrousforge.errors import DeviceUnavailable, InvalidModelFile

from .vectors import assert_matches, cosine

pytestmark = pytest.mark.slow
SENTENCES = ["a cat sits", "a kitten is sitting", "stock market", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def engine(minilm_engine: ff.Engine) -> ff.Engine:
    convert(minilm_engine.store, "minilm:l6", "onnx")
    return minilm_engine


def test_torch_reference_makes_sense(engine: ff.Engine) -> None:
    v = engine.embed("minilm:l6", SENTENCES).embeddings
    assert [len(x) for x in v] == [384] * 4
    assert cosine(v[0], v[1]) >= 0.7 and cosine(v[0], v[2]) <= 0.2
    assert "torch" in {m.backend for m in engine.ps()}


def test_onnx_conversion_matches_torch(engine: ff.Engine) -> None:
    m = engine.show("minilm:l6-onnx")
    assert (m.format, m.parent, m.source) == ("onnx", "minilm:l6", "convert:minilm:l6")
    ref = engine.embed("minilm:l6", SENTENCES).embeddings
    got = engine.embed("minilm:l6-onnx", SENTENCES).embeddings
    assert_matches(ref, got, 1e-5)
    assert {m.backend for m in engine.ps()} >= {"torch", "onnx"}


def test_corrupt_onnx_and_absent_device(engine: ff.Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(engine.show("minilm:l6-onnx").path, bad)
    (bad / "model.onnx").write_bytes(b"not a protobuf at all")
    engine.pull(str(bad), name="bad-onnx")
    with pytest.raises(InvalidModelFile, match="onnxruntime cannot load"):
        engine.embed("bad-onnx", "x")
    with pytest.raises(DeviceUnavailable, match="cuda:0"):
        engine.load("minilm:l6-onnx", device="cuda:0")
    assert len(engine.embed("minilm:l6-onnx", "still serving").embeddings[0]) == 384
    engine.rm("bad-onnx")


def test_parity_matrix(engine: ff.Engine) -> None:
    from ferrousforge.parity import run

    rows = {(r.backend, r.device): r for r in run(engine, "minilm:l6")}
    wanted = {("torch", "cpu"), ("onnx", "cpu"), ("tvm", "cpu"), ("wgpu", "vulkan:0")}
    assert wanted <= set(rows), f"missing pairs: {wanted - set(rows)}"
    for pair in wanted:
        row = rows[pair]
        assert row.ok, row
        assert row.max_abs_diff is not None and row.max_abs_diff <= (
            1e-4 if pair[0] == "wgpu" else 1e-5
        )
        assert row.ms_per_batch is not None and row.load_ms is not None
    assert rows[("onnx", "cpu")].model == "minilm:l6-onnx"
    assert 0 < rows[("onnx", "cpu")].max_abs_diff <= 1e-5  # type: ignore[operator]
    assert "wgpu" in engine.backends.names() and "tvm" in engine.backends.names()
    strict = run(engine, "minilm:l6", backends=["onnx"], tolerance=1e-12)
    assert [r.ok for r in strict] == [False]  # the check can fail
    assert engine.ps() == []  # parity leaves nothing loaded


def test_forge_parity_exit_codes(engine: ff.Engine) -> None:
    env = os.environ | {"FORGE_HOME": str(engine.settings.home)}
    every = [sys.executable, "-m", "ferrousforge", "parity", "minilm:l6"]
    ok = subprocess.run(every, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    for backend, device in (
        ("onnx", "cpu"),
        ("torch", "cpu"),
        ("tvm", "cpu"),
        ("wgpu", "vulkan:0"),
    ):
        assert any(line.split()[:2] == [backend, device] and line.endswith(" ok") for line in lines)
    cmd = [*every, "--backends", "onnx"]
    bad = subprocess.run(
        [*cmd, "--tolerance", "1e-12"], env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1 and "FAIL" in bad.stdout


def test_onnx_session_options_and_io_binding(engine: ff.Engine) -> None:
    plain = engine.embed("minilm:l6-onnx", SENTENCES).embeddings
    settings = ff.Settings(
        home=engine.settings.home, threads=1, onnx_optimization="basic", onnx_io_binding=True
    )
    with ff.Engine(settings) as bound:
        got = bound.embed("minilm:l6-onnx", SENTENCES).embeddings
        mold = bound._engine.scheduler.runners["minilm:l6-onnx"].mold
        options = mold._session.get_session_options()  # type: ignore[attr-defined]
        assert mold.io_binding  # type: ignore[attr-defined]
        assert str(options.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
        assert options.intra_op_num_threads == 1
    for a, b in zip(plain, got, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
    with pytest.raises(ValueError, match="onnx_optimization"):
        ff.Settings(onnx_optimization="max")
