"""Tensor specs, the checks before a run, and the Open Inference Protocol's bodies both ways
(JSON and binary, BYTES included), without a model."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from ferrousforge.errors import InvalidTensor, LimitExceeded
from ferrousforge.inference_wire import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from ferrousforge.schema import ModelMetadata
from ferrousforge.tensors import TensorSpec, check_inputs

SPECS = [
    TensorSpec(name="x", datatype="FP32", shape=[-1, 3]),
    TensorSpec(name="mask", datatype="BOOL", shape=[-1]),
]


def test_a_manifest_of_bare_shapes_still_reads() -> None:
    old = ModelMetadata.model_validate({"input_shapes": [[1, 3]], "output_shapes": []})
    assert old.input_shapes == [TensorSpec(name="", datatype="", shape=[1, 3])]
    new = ModelMetadata.model_validate({"input_shapes": [s.model_dump() for s in SPECS]})
    assert new.input_shapes == SPECS


def test_inputs_are_checked_by_name_datatype_and_shape() -> None:
    x, mask = np.zeros((2, 3), np.float32), np.ones(2, bool)
    arrays = check_inputs(SPECS, {"x": x.tolist(), "mask": mask}, max_elements=100)
    assert arrays["x"].dtype == np.float32 and arrays["mask"] is mask
    wrong = [
        ({"x": x}, "missing input 'mask' (mask: BOOL[?])"),
        ({"x": x, "mask": mask, "y": x}, "unknown input 'y'; the model takes: x: FP32[?, 3]"),
        ({"x": x.astype(np.int32), "mask": mask}, "'x' must be FP32, not INT32"),
        ({"x": x.reshape(3, 2), "mask": mask}, r"'x' must have shape [?, 3], not [3, 2]"),
        ({"x": x[0], "mask": mask}, r"'x' must have shape [?, 3], not [3]"),
        ({"x": [[1, "a", 2]], "mask": mask}, "input 'x': could not convert"),
    ]
    for inputs, message in wrong:
        with pytest.raises(InvalidTensor) as e:
            check_inputs(SPECS, inputs, max_elements=100)
        assert message in str(e.value)
    with pytest.raises(LimitExceeded) as limit:
        check_inputs(SPECS, {"x": np.zeros((40, 3), np.float32), "mask": mask}, max_elements=100)
    assert limit.value.setting == "max_tensor_elements"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_requests_and_responses_round_trip(binary: bool) -> None:
    inputs: dict[str, Any] = {
        "x": np.arange(6, dtype=np.float16).reshape(2, 3),
        "ids": np.array([[1, -2]], np.int64),
        "words": np.array([b"cat", "kätzchen".encode(), b""], object),
        "flags": np.array([True, False]),
    }
    if not binary:
        inputs.pop("x")  # FP16 travels in binary only in Triton's client; JSON works here too
    body, length = encode_request(inputs, ["y"], binary=binary, parameters={"keep_alive": "5m"})
    assert (length is not None) == binary
    call = decode_request(body, length)
    assert call.outputs == ["y"] and call.keep_alive == "5m"
    assert call.binary == ({"y"} if binary else set())
    for name, value in inputs.items():
        assert call.inputs[name].dtype == value.dtype and call.inputs[name].shape == value.shape
        assert call.inputs[name].tolist() == value.tolist()
    answer, header = encode_response("m", inputs, call)
    if binary:
        assert header is None  # none of these is the output asked for in binary: all JSON
    back = decode_response(answer, header)
    assert back["ids"].tolist() == [[1, -2]] and back["words"].tolist() == list(inputs["words"])


def test_binary_bytes_elements_are_length_prefixed() -> None:
    body, length = encode_request({"w": np.array([b"ab", b"c"], object)}, None)
    assert length is not None
    raw = body[length:]
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    assert json.loads(body[:length])["parameters"] == {"binary_data_output": True}
    assert decode_request(body, length).binary == {"*"}


def test_malformed_bodies_are_invalid_tensors() -> None:
    good = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    bad = [
        (b"[]", "must be an object"),
        (b"{", "does not parse"),
        (json.dumps({"inputs": []}).encode(), "no inputs"),
        (json.dumps({"inputs": [{**good, "shape": [2, -1]}]}).encode(), "shape must be"),
        (json.dumps({"inputs": [{**good, "shape": list(range(1, 20))}]}).encode(), "shape"),
        (json.dumps({"inputs": [{**good, "name": ""}]}).encode(), "name must be"),
        (json.dumps({"inputs": [{**good, "data": "12"}]}).encode(), "data must be a list"),
        (json.dumps({"inputs": [good], "outputs": "y"}).encode(), "outputs must be a list"),
        (json.dumps({"inputs": [good], "parameters": {"keep_alive": []}}).encode(), "keep_alive"),
    ]
    for body, message in bad:
        with pytest.raises(InvalidTensor, match=message):
            decode_request(body, None)
    header = json.dumps({"inputs": [{**good, "parameters": {"binary_data_size": 8}}]}).encode()
    assert decode_request(header + b"\0" * 8, len(header)).inputs["x"].tolist() == [0, 0]
    with pytest.raises(InvalidTensor, match="past the body's end"):
        decode_request(header + b"\0" * 4, len(header))
    with pytest.raises(InvalidTensor, match="bytes after the last binary input"):
        decode_request(header + b"\0" * 12, len(header))
    with pytest.raises(InvalidTensor, match="does not fit a body"):
        decode_request(header, len(header) + 1)
