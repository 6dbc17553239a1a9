"""minilm:l6 on the wgpu backend (slow tier): the WGSL kernels on real adapters against the
torch reference on cpu."""

from __future__ import annotations

import pytest

import ferrousforge as ff
from ferrousforge.errors import DeviceUnavailable

from .vectors import assert_matches, cosine

pytestmark = pytest.mark.slow
SENTENCES = ["a cat sits", "a kitten is sitting", "stock market", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def engine(minilm_engine: ff.Engine) -> ff.Engine:
    if "wgpu" not in minilm_engine.backends.names():
        pytest.skip("the wgpu backend is not installed")
    if not minilm_engine.backends.get("wgpu").available():
        pytest.skip("the wgpu backend is not installed")
    return minilm_engine


@pytest.fixture(scope="module")
def reference(engine: ff.Engine) -> list[list[float]]:
    engine.load("minilm:l6", backend="torch", device="cpu")
    vectors = engine.embed("minilm:l6", SENTENCES).embeddings
    engine.unload("minilm:l6")
    return vectors


def wgpu_devices(engine: ff.Engine) -> list[str]:
    return [d.id for d in engine.backends.get("wgpu").devices()]


@pytest.mark.parametrize("device", ["vulkan:0", "gl:0"])
def test_wgpu_matches_torch(engine: ff.Engine, reference: list[list[float]], device: str) -> None:
    if device not in wgpu_devices(engine):
        pytest.skip(f"wgpu has no {device} adapter here")
    engine.load("minilm:l6", backend="wgpu", device=device)
    assert ("wgpu", device) in {(m.backend, m.device) for m in engine.ps()}
    got = engine.embed("minilm:l6", SENTENCES).embeddings
    assert [len(v) for v in got] == [384] * 4
    assert_matches(reference, got, 1e-4)
    assert cosine(got[0], got[1]) >= 0.7 and cosine(got[0], got[2]) <= 0.2


def test_absent_device_then_still_serving(engine: ff.Engine, reference: list[list[float]]) -> None:
    if "vulkan:0" not in wgpu_devices(engine):
        pytest.skip("wgpu has no vulkan:0 adapter here")
    engine.load("minilm:l6", backend="wgpu", device="vulkan:0")
    with pytest.raises(DeviceUnavailable, match="'vulkan:7' is not available to wgpu; available: "):
        engine.load("minilm:l6", backend="wgpu", device="vulkan:7")
    one = engine.embed("minilm:l6", SENTENCES[0]).embeddings[0]  # alone: no padding this time
    assert max(abs(x - y) for x, y in zip(one, reference[0], strict=True)) <= 1e-4
    assert ("wgpu", "vulkan:0") in {(m.backend, m.device) for m in engine.ps()}
