"""The CUDA paths (slow tier). They run where a CUDA device is present and skip, saying why,
everywhere else: torch cuda, onnxruntime-gpu, TVM's cuda target and llama.cpp's CUDA build."""

from __future__ import annotations

import pytest

import ferrousforge as ff

from .vectors import assert_matches

pytestmark = pytest.mark.slow
SENTENCES = ["a cat sits", "a kitten is sitting", "stock market"]


def cuda_or_skip(engine: ff.Engine, backend: str) -> str:
    if backend not in engine.backends.names() or not engine.backends.get(backend).available():
        pytest.skip(f"the {backend} backend is not installed")
    seen = [d.id for d in engine.backends.get(backend).devices()]
    if "cuda:0" not in seen:
        pytest.skip(f"no CUDA device for {backend} here (it sees: {', '.join(seen)})")
    return "cuda:0"


@pytest.mark.parametrize(
    ("backend", "model"),
    [("torch", "minilm:l6"), ("onnx", "minilm:l6-onnx"), ("tvm", "minilm:l6")],
)
def test_embeddings_on_cuda_match_the_cpu(
    minilm_engine: ff.Engine, backend: str, model: str
) -> None:
    device = cuda_or_skip(minilm_engine, backend)
    if model.endswith("-onnx"):
        from ferrousforge.convert import convert

        convert(minilm_engine.store, "minilm:l6", "onnx")
    # the reference must run on the CPU: by default a CUDA machine would load it on cuda:0
    minilm_engine.unload("minilm:l6")
    minilm_engine.load("minilm:l6", backend="torch", device="cpu")
    reference = minilm_engine.embed("minilm:l6", SENTENCES).embeddings
    assert next(p for p in minilm_engine.ps() if p.name == "minilm:l6").device == "cpu"
    minilm_engine.unload(model)
    minilm_engine.load(model, backend=backend, device=device)
    try:
        got = minilm_engine.embed(model, SENTENCES).embeddings
        assert next(p for p in minilm_engine.ps() if p.name == model).device == device
    finally:
        minilm_engine.unload(model)
    assert_matches(reference, got, 1e-4)


def test_llama_cpp_generates_on_cuda(minilm_engine: ff.Engine) -> None:
    device = cuda_or_skip(minilm_engine, "llama_cpp")
    if not minilm_engine.store.exists("smollm2:135m"):
        pytest.skip("smollm2:135m is not in the test home")
    minilm_engine.load("smollm2:135m", device=device)
    reply = minilm_engine.chat(
        "smollm2:135m",
        [{"role": "user", "content": "What is the capital of France?"}],
        options={"temperature": 0, "num_predict": 24},
    )
    assert "Paris" in reply.text
