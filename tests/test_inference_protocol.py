"""The Open Inference Protocol (KServe v2) on ``forge serve``: the official Triton client
(``tritonclient[http]``) and raw HTTP against a generated ONNX classifier, compared with
onnxruntime run directly; minilm:l6's ONNX form in the slow tier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import ferrousforge as ff
from ferrousforge.client import RemoteEngine

from .apiserver import running
from .tensormodels import images, onnxruntime_outputs, write_classifier

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a dev need")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home, root = tmp_path_factory.mktemp("v2-home"), tmp_path_factory.mktemp("v2-root")
    graph = write_classifier(root / "classifier.onnx")
    with running(ff.Settings(home=home, pull_paths=[root], keep_alive=600)) as srv:
        with RemoteEngine(srv.url) as engine:
            engine.pull(str(graph), name="cls:1")
            engine.pull(str(write_classifier(root / "other.onnx", seed=5)), name="team/cls:2")
        yield srv.url, graph


def triton(url: str) -> Any:
    return httpclient.InferenceServerClient(url=url.removeprefix("http://"))


def test_health_and_metadata_through_the_triton_client(served: tuple[str, Path]) -> None:
    url, _ = served
    client = triton(url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cls:1")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("cls:1")
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("logits", "FP32", [-1, 10]),
        ("probabilities", "FP32", [-1, 10]),
    ]
    assert client.get_model_metadata("cls:1", model_version="1")["name"] == "cls:1"
    assert not client.is_model_ready("nope:1")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_the_triton_client_gets_onnxruntimes_numbers(
    served: tuple[str, Path], binary: bool
) -> None:
    url, graph = served
    x = images(3)
    given = httpclient.InferInput("images", list(x.shape), "FP32")
    given.set_data_from_numpy(x, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities",)]
    answer = triton(url).infer("cls:1", [given], outputs=wanted)
    expected = onnxruntime_outputs(graph, {"images": x})
    got = answer.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (3, 10)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-6, atol=1e-7)
    assert answer.as_numpy("logits") is None  # only what was asked for
    every = triton(url).infer("cls:1", [given])  # no outputs named: all, in binary
    np.testing.assert_allclose(every.as_numpy("logits"), expected["logits"], rtol=1e-6)


def test_a_model_named_with_a_namespace_and_a_version(served: tuple[str, Path]) -> None:
    url, graph = served
    x = images(1, seed=9)
    given = httpclient.InferInput("images", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    answer = triton(url).infer("team/cls:2", [given], model_version="1")
    expected = onnxruntime_outputs(graph.parent / "other.onnx", {"images": x})
    np.testing.assert_allclose(answer.as_numpy("logits"), expected["logits"], rtol=1e-6)
    with pytest.raises(Exception, match="no version"):
        triton(url).infer("team/cls:2", [given], model_version="7")


def good_tensor(x: Any) -> dict[str, Any]:
    """``x`` as a JSON tensor, flat, with a null the protocol's clients may send."""
    shape = list(x.shape)
    return {"name": "images", "datatype": "FP32", "shape": shape, "data": x.reshape(-1).tolist(),
            "parameters": None}  # fmt: skip


def test_json_tensors_over_raw_http(served: tuple[str, Path]) -> None:
    url, graph = served
    x = images(2, seed=3)
    body = {"id": "r-1", "inputs": [good_tensor(x)], "outputs": [{"name": "logits"}]}
    r = httpx.post(f"{url}/v2/models/cls:1/infer", json=body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert (reply["model_name"], reply["id"]) == ("cls:1", "r-1")
    [out] = reply["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("logits", "FP32", [2, 10])
    expected = onnxruntime_outputs(graph, {"images": x})["logits"]
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 10), expected, rtol=1e-6)
    nested = {"inputs": [{**good_tensor(x), "data": x.tolist()}]}
    assert httpx.post(f"{url}/v2/models/cls:1/infer", json=nested).status_code == 200


def _infer(url: str, tensor: dict[str, Any], **extra: Any) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/cls:1/infer", json={"inputs": [tensor], **extra})


def test_wrong_tensors_are_a_400_naming_the_input(served: tuple[str, Path]) -> None:
    url, _ = served
    good = {"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}
    cases = [
        ({**good, "datatype": "INT64", "data": [0] * 192}, "'images' must be FP32, not INT64"),
        ({**good, "shape": [1, 192], "data": [0.0] * 192}, "'images' must have shape [?, 3, 8, 8]"),
        ({**good, "name": "pixels"}, "unknown input 'pixels'"),
        ({**good, "data": [0.0] * 5}, "input 'images': data does not fit"),
        ({**good, "datatype": "FP99"}, "unknown datatype 'FP99'"),
        ({**good, "shape": [-1, 3, 8, 8]}, "input 'images': shape must be"),
    ]
    for tensor, message in cases:
        r = _infer(url, tensor)
        assert r.status_code == 400, (tensor, r.text)
        assert message in r.json()["error"], r.text
    r = _infer(url, good, outputs=[{"name": "scores"}])
    assert r.status_code == 400 and "unknown output 'scores'" in r.json()["error"]
    r = httpx.post(f"{url}/v2/models/nope:1/infer", json={"inputs": [good]})
    assert r.status_code == 404 and "error" in r.json()


def test_binary_bodies_pass_the_middleware_and_are_checked(served: tuple[str, Path]) -> None:
    url, graph = served
    x = images(1, seed=4)
    header = json.dumps({
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8],
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header))}
    r = httpx.post(f"{url}/v2/models/cls:1/infer", content=header + x.tobytes(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers["inference-header-content-length"])
    outputs = json.loads(r.content[:length])["outputs"]
    raw, offset, expected = r.content[length:], 0, onnxruntime_outputs(graph, {"images": x})
    for out in outputs:
        size = out["parameters"]["binary_data_size"]
        got = np.frombuffer(raw[offset : offset + size], np.float32).reshape(out["shape"])
        np.testing.assert_allclose(got, expected[out["name"]], rtol=1e-6)
        offset += size
    assert offset == len(raw)
    short = header + x.tobytes()[:-4]
    r = httpx.post(f"{url}/v2/models/cls:1/infer", content=short, headers=headers)
    assert r.status_code == 400 and "input 'images'" in r.json()["error"]
    bad = {"Inference-Header-Content-Length": "999999"}
    r = httpx.post(f"{url}/v2/models/cls:1/infer", content=header + x.tobytes(), headers=bad)
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def test_a_page_of_another_site_cannot_infer(served: tuple[str, Path]) -> None:
    url, _ = served
    x = images(1)
    r = httpx.post(
        f"{url}/v2/models/cls:1/infer",
        content=b'{"inputs": []}' + x.tobytes(),
        headers={"Inference-Header-Content-Length": "14", "Origin": "https://evil.example"},
    )
    assert r.status_code == 403


def test_the_remote_engine_infers_over_the_protocol(served: tuple[str, Path]) -> None:
    url, graph = served
    x = images(2, seed=6)
    expected = onnxruntime_outputs(graph, {"images": x})
    with RemoteEngine(url) as engine:
        got = engine.infer("cls:1", {"images": x.tolist()}, outputs=["probabilities"])
        assert list(got.tensors) == ["probabilities"]
        np.testing.assert_allclose(got.tensors["probabilities"], expected["probabilities"], 1e-6)
        with pytest.raises(ff.errors.InvalidTensor, match="'images' must be FP32"):
            engine.infer("cls:1", {"images": x.astype(np.float64)})


@pytest.mark.slow
def test_minilm_onnx_answers_the_protocol(minilm_engine: ff.Engine) -> None:
    """The sentence encoder's own graph, fed token ids, gives onnxruntime's hidden states."""
    if "minilm:l6-onnx" not in {m.name for m in minilm_engine.list()}:
        minilm_engine.convert("minilm:l6", "onnx")
    home = minilm_engine.settings.home
    with running(ff.Settings(home=home, keep_alive=60)) as srv:
        client = triton(srv.url)
        meta = client.get_model_metadata("minilm:l6-onnx")
        names = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
        assert names["input_ids"] == ("INT64", [-1, -1])
        ids = np.array([[101, 4937, 2003, 1037, 10025, 102]], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        given = []
        for name, value in feed.items():
            tensor = httpclient.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            given.append(tensor)
        answer = client.infer("minilm:l6-onnx", given)
        graph = Path(minilm_engine.show("minilm:l6-onnx").path)
        expected = onnxruntime_outputs(next(graph.glob("*.onnx")), feed)
        first = meta["outputs"][0]["name"]
        got = answer.as_numpy(first)
        assert got.shape == (1, 6, 384)
        np.testing.assert_allclose(got, expected[first], rtol=1e-5, atol=1e-5)
