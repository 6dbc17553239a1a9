"""Saved programs answer ``infer`` through the real runtimes: a ``torch.export`` program
(``.pt2``) and a TorchScript one (``.pt``) on torch, a serialized ``jax.export`` program
(``.jaxexport``) on jax, and an ONNX graph with no tokenizer compiled by TVM."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ferrousforge as ff
from ferrousforge.errors import InvalidModelFile, InvalidTensor

from .tensormodels import images, onnxruntime_outputs, write_classifier


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ff.Engine]:
    with ff.Engine(ff.Settings(home=tmp_path / "home", threads=2)) as e:
        yield e


def specs(found: list[Any]) -> list[tuple[str, str, list[int]]]:
    return [(s.name, s.datatype, s.shape) for s in found]


@pytest.fixture(scope="module")
def module() -> Any:
    """A small module of one input ``x`` [batch, 4] with two outputs."""
    torch: Any = pytest.importorskip("torch")

    class Small(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: Any) -> tuple[Any, Any]:
            return torch.softmax(self.linear(x), -1), x.sum(-1)

    torch.manual_seed(0)
    return Small().eval()


def expected(module: Any, x: Any) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [t.numpy() for t in module(torch.from_numpy(x))]


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def test_an_exported_program_answers_infer(engine: ff.Engine, module: Any, tmp_path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", max=1024)
    program = torch.export.export(module, (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(tmp_path / "small.pt2"))
    m = engine.pull(str(tmp_path / "small.pt2"), name="small:pt2")
    assert m.format == "pytorch"
    assert specs(m.metadata.input_shapes) == [("x", "FP32", [-1, 4])]
    assert specs(m.metadata.output_shapes) == [
        ("output_0", "FP32", [-1, 3]),
        ("output_1", "FP32", [-1]),
    ]
    got = engine.infer("small:pt2", {"x": X}).tensors
    assert list(got) == ["output_0", "output_1"]
    for name, want in zip(got, expected(module, X), strict=True):
        assert np.allclose(got[name], want, atol=1e-5), name
    assert next(p for p in engine.ps() if p.name == "small:pt2").backend == "torch"
    one = engine.infer("small:pt2", {"x": X[:1].tolist()}, outputs=["output_1"]).tensors
    assert list(one) == ["output_1"] and np.allclose(one["output_1"], X[:1].sum(-1), atol=1e-5)
    with pytest.raises(InvalidTensor, match="input 'x' must be FP32, not FP64"):
        engine.infer("small:pt2", {"x": X.astype(np.float64)})
    with pytest.raises(InvalidTensor, match=r"input 'x' must have shape \[\?, 4\], not \[5, 3\]"):
        engine.infer("small:pt2", {"x": X[:, :3]})


def test_a_torchscript_program_answers_infer(
    engine: ff.Engine, module: Any, tmp_path: Path
) -> None:
    import torch

    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; we still read it
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        torch.jit.trace(module, (torch.randn(2, 4),)).save(str(tmp_path / "small.pt"))
    m = engine.pull(str(tmp_path / "small.pt"), name="small:pt")
    assert m.format == "pytorch"
    assert specs(m.metadata.input_shapes) == [("x", "", [])]  # TorchScript keeps only names
    assert [s.name for s in m.metadata.output_shapes] == ["output_0", "output_1"]
    got = engine.infer("small:pt", {"x": X}).tensors
    for name, want in zip(got, expected(module, X), strict=True):
        assert np.allclose(got[name], want, atol=1e-5), name
    with pytest.raises(InvalidTensor, match="unknown input 'y'"):
        engine.infer("small:pt", {"y": X})


def test_a_jax_export_program_answers_infer(engine: ff.Engine, tmp_path: Path) -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    w = np.random.default_rng(2).standard_normal((3, 2)).astype(np.float32)

    def f(x: Any) -> Any:
        return jnp.tanh(x @ w) + 1

    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(f))(jax.ShapeDtypeStruct((batch, 3), jnp.float32))
    (tmp_path / "f.jaxexport").write_bytes(exported.serialize())
    m = engine.pull(str(tmp_path / "f.jaxexport"), name="f:jax")
    assert m.format == "jax"
    assert specs(m.metadata.input_shapes) == [("input_0", "FP32", [-1, 3])]
    assert specs(m.metadata.output_shapes) == [("output_0", "FP32", [-1, 2])]
    x = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    got = engine.infer("f:jax", {"input_0": x}).tensors
    assert np.allclose(got["output_0"], np.asarray(f(x)), atol=1e-5)
    assert next(p for p in engine.ps() if p.name == "f:jax").backend == "jax"

    def g(inputs: dict[str, Any]) -> dict[str, Any]:  # named by their dictionary keys
        return {"scores": f(inputs["images"])}

    named = jax.export.export(jax.jit(g))({"images": jax.ShapeDtypeStruct((2, 3), jnp.float32)})
    (tmp_path / "g.jaxexport").write_bytes(named.serialize())
    m = engine.pull(str(tmp_path / "g.jaxexport"), name="g:jax")
    assert specs(m.metadata.input_shapes) == [("images", "FP32", [2, 3])]
    got = engine.infer("g:jax", {"images": x[:2]}).tensors
    assert list(got) == ["scores"] and np.allclose(got["scores"], np.asarray(f(x[:2])), atol=1e-5)
    with pytest.raises(InvalidTensor, match=r"input 'images' must have shape \[2, 3\]"):
        engine.infer("g:jax", {"images": x})


def test_an_onnx_graph_with_no_tokenizer_answers_infer_on_tvm(
    engine: ff.Engine, tmp_path: Path
) -> None:
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    graph = write_classifier(tmp_path / "classifier.onnx")
    engine.pull(str(graph), name="cls:tvm")
    assert engine.load("cls:tvm", backend="tvm").backend == "tvm"
    for batch in (2, 3, 2):  # a compile per batch size; the third reuses the first's
        x = images(batch)
        got = engine.infer("cls:tvm", {"images": x}).tensors
        want = onnxruntime_outputs(graph, {"images": x})
        assert list(got) == ["logits", "probabilities"]
        for name, value in want.items():
            assert np.allclose(got[name], value, atol=1e-4), name
    with pytest.raises(InvalidTensor, match="input 'images' must have shape"):
        engine.infer("cls:tvm", {"images": x[:, :1]})


def test_a_file_torch_cannot_read_is_pulled_without_specs_and_refused_at_load(
    engine: ff.Engine, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "state.pt").write_bytes(b"not a TorchScript archive")
    m = engine.pull(str(tmp_path / "state.pt"), name="state:pt")
    assert m.format == "pytorch" and m.metadata.input_shapes == []
    with pytest.raises(InvalidModelFile, match=r"as a TorchScript file \(torch\.jit\.save\)"):
        engine.infer("state:pt", {"x": X})
