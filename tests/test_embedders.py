"""minilm:l6 on the torch and onnx backends (slow tier: real models, real runtimes)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ferrousforge as ff
from ferrousforge.convert import convert
from ferrousforge.errors import DeviceUnavailable, InvalidModelFile

pytestmark = pytest.mark.slow
SENTENCES = ["a cat sits", "a kitten is sitting", "stock market", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def engine():
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/minilm/l6.json").is_file():
        pytest.skip(f"minilm:l6 is not in {home}; ./dev.sh test pulls it first")
    with ff.Engine(ff.Settings(home=home, threads=2)) as engine:
        convert(engine.store, "minilm:l6", "onnx")
        yield engine


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


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
    for a, b in zip(ref, got, strict=True):
        assert cosine(a, b) >= 0.9999
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
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
    assert {("torch", "cpu"), ("onnx", "cpu")} <= set(rows)
    onnx = rows[("onnx", "cpu")]
    assert onnx.ok and onnx.model == "minilm:l6-onnx"
    assert onnx.max_abs_diff is not None and 0 < onnx.max_abs_diff <= 1e-5
    assert onnx.ms_per_batch is not None and onnx.load_ms is not None
    strict = run(engine, "minilm:l6", backends=["onnx"], tolerance=1e-12)
    assert [r.ok for r in strict] == [False]  # the check can fail


def test_forge_parity_exit_codes(engine: ff.Engine) -> None:
    env = os.environ | {"FORGE_HOME": str(engine.settings.home)}
    cmd = [sys.executable, "-m", "ferrousforge", "parity", "minilm:l6", "--backends", "onnx"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "minilm:l6-onnx" in ok.stdout and " ok" in ok.stdout
    bad = subprocess.run(
        [*cmd, "--tolerance", "1e-12"], env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1 and "FAIL" in bad.stdout
