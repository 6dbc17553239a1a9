"""A small image-classifier-shaped ONNX graph, generated: ``images`` FP32 [batch, 3, 8, 8]
through Flatten, Gemm and Softmax to ``logits`` and ``probabilities`` FP32 [batch, 10]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (3, 8, 8)
CLASSES = 10


def write_classifier(path: Path, seed: int = 0) -> Path:
    """Write the graph to ``path`` (weights from ``seed``) and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((int(np.prod(SHAPE)), CLASSES)).astype(np.float32) / 8
    bias = rng.standard_normal(CLASSES).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *SHAPE])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
        ],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def images(batch: int, seed: int = 1) -> Any:
    return np.random.default_rng(seed).standard_normal((batch, *SHAPE)).astype(np.float32)


def onnxruntime_outputs(path: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """What onnxruntime itself gives for ``inputs``, by output name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
