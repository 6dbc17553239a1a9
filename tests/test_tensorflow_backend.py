"""The TensorFlow backend: a small Keras model, saved as a SavedModel and as a ``.keras``
file, and a SavedModel sentence encoder (a real TensorFlow computation on strings), each
served by ``forge serve`` and compared with TensorFlow's own numbers.

TensorFlow is never imported in this process: once it is, the process has its threads,
and a later ``fork`` in another test warns (an error here). A child process builds the
models and computes the references; a ``forge serve`` child serves them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ferrousforge.backends import Backends
from ferrousforge.devices import choose, cpu_device
from ferrousforge.errors import ConfigError, MissingExtra
from ferrousforge.mold import LoadOptions
from ferrousforge.schema import ModelMetadata
from ferrousforge.store.manifest import Manifest
from ferrousforge.tensors import TensorSpec

from .conftest import FileServer
from .labharness import forge

needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="the tensorflow extra is not installed"
)
TEXTS = ["a cat sits on the mat", "The quick brown fox", "", "cat cat cat"]

# Run in a child: the models, and TensorFlow's outputs for the inputs saved beside them.
BUILD = r"""
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("error")
# Keras' .keras save under numpy 2 (keras/src/saving/saving_lib.py); nothing else is let by
warnings.filterwarnings(
    "ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning
)
import numpy as np
import tensorflow as tf
import keras

out, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
keras.utils.set_random_seed(0)
features = keras.Input(shape=(4,), name="features")
bias = keras.initializers.RandomNormal(stddev=0.5)  # not zeros: every output is nonzero
hidden = keras.layers.Dense(3, "relu", bias_initializer=bias, name="hidden")(features)
model = keras.Model(features, keras.layers.Dense(2, bias_initializer=bias, name="scores")(hidden))
model.export(str(out / "dense-saved"))  # a SavedModel whose serving_default is the model
model.save(out / "dense-keras.keras")
x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
np.save(out / "x.npy", x)
reloaded = tf.saved_model.load(str(out / "dense-saved"))  # kept: its variables are read
np.save(out / "saved.npy", reloaded.signatures["serving_default"](features=x)["output_0"].numpy())
np.save(out / "keras.npy", keras.models.load_model(out / "dense-keras.keras")(x).numpy())

BUCKETS, DIM = 32, 8


class Encoder(tf.Module):
    # words hashed into buckets, counted, then projected: a bag-of-words sentence encoder
    def __init__(self):
        self.projection = tf.Variable(tf.random.stateless_normal((BUCKETS, DIM), seed=(1, 2)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(self, text):
        words = tf.strings.split(tf.strings.lower(text))
        ids = tf.strings.to_hash_bucket_fast(words, BUCKETS)
        counts = tf.reduce_sum(tf.ragged.map_flat_values(tf.one_hot, ids, BUCKETS), axis=1)
        return {"embedding": tf.matmul(counts, self.projection)}


encoder = Encoder()
tf.saved_model.save(encoder, str(out / "encoder"), signatures={"serving_default": encoder.encode})
np.save(out / "vectors.npy", encoder.encode(tf.constant(texts))["embedding"].numpy())
"""


def test_the_tensorflow_datatypes_and_the_sentence_encoder_rule() -> None:
    from ferrousforge.backends.tensorflow_backend import datatype, is_sentence_encoder

    names = ["float32", "float16", "float64", "int64", "uint8", "bool", "string", "bfloat16"]
    assert [datatype(n) for n in names] == [
        "FP32", "FP16", "FP64", "INT64", "UINT8", "BOOL", "BYTES", "",
    ]  # fmt: skip
    text = TensorSpec(name="text", datatype="BYTES", shape=[-1])
    vectors = TensorSpec(name="embedding", datatype="FP32", shape=[-1, 8])
    assert is_sentence_encoder([text], [vectors])
    assert not is_sentence_encoder([text.model_copy(update={"shape": [-1, 1]})], [vectors])
    assert not is_sentence_encoder([text], [vectors.model_copy(update={"datatype": "INT64"})])
    assert not is_sentence_encoder([text], [vectors, vectors])


def test_a_missing_tensorflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real(name, *a),
    )
    found = Backends.discover()
    backend = found.get("tensorflow")
    assert backend.formats == frozenset({"tensorflow"}) and not backend.available()
    m = Manifest(
        name="m", source="file:/x", format="tensorflow", path="/x", sha256="0" * 64, size=1,
        metadata=ModelMetadata(format="tensorflow"),
    )  # fmt: skip
    with pytest.raises(MissingExtra, match=r"pip install 'ferrousforge\[tensorflow\]'"):
        choose(m, found, LoadOptions())
    with pytest.raises(MissingExtra, match=r"^tensorflow is not installed"):
        backend.open(m, cpu_device("tensorflow"), LoadOptions())


@needs_tf
def test_listing_devices_does_not_import_tensorflow_cpu() -> None:
    from ferrousforge.backends.tensorflow_backend import TensorflowBackend, cpu_only

    if not cpu_only():
        pytest.skip("a tensorflow with GPUs: listing them imports it, which no test here may")
    assert "tensorflow" not in sys.modules  # no test here imports it
    devices = TensorflowBackend().devices()
    assert [(d.id, d.backends) for d in devices] == [("cpu", ("tensorflow",))]
    assert "tensorflow" not in sys.modules


def test_tensorflow_is_not_loaded_beside_a_shared_llvm(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferrousforge.backends import tensorflow_backend

    assert "tensorflow" not in sys.modules  # else it would be returned as it is
    monkeypatch.setattr(tensorflow_backend, "shared_llvm", lambda: "/usr/lib/libLLVM-15.so.1")
    with pytest.raises(ConfigError, match=r"libLLVM-15\.so\.1 is loaded .* the wgpu backend"):
        tensorflow_backend._tf()


# In a child: wgpu lists its devices (a Vulkan driver may load Mesa's libLLVM), then the
# backend is asked for tensorflow, which segfaulted the process before the check.
WGPU_THEN_TF = """
from ferrousforge.backends import Backends, tensorflow_backend
from ferrousforge.errors import ConfigError
Backends.discover().get("wgpu").devices()
if tensorflow_backend.shared_llvm() is None:
    print("no shared LLVM")
else:
    try:
        tensorflow_backend._tf()
    except ConfigError as e:
        print("refused:", e)
"""


@needs_tf
@pytest.mark.skipif(importlib.util.find_spec("wgpu") is None, reason="wgpu is not installed")
def test_a_process_that_listed_wgpu_devices_refuses_tensorflow_instead_of_crashing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WGPU_THEN_TF], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if "no shared LLVM" in done.stdout:
        pytest.skip("this machine's wgpu driver loads no shared LLVM")
    assert "refused: tensorflow cannot load in this process" in done.stdout, done.stdout


# -- served: forge serve in a child, the models built by TensorFlow in another --


@dataclass
class Served:
    url: str
    root: Path

    def reference(self, name: str) -> Any:
        return np.load(self.root / f"{name}.npy", allow_pickle=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root, home = tmp_path_factory.mktemp("tf-models"), tmp_path_factory.mktemp("tf-home")
    built = subprocess.run(
        [sys.executable, "-c", BUILD, str(root), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert built.returncode == 0, built.stderr[-4000:]
    env = {
        "FORGE_HOME": str(home),
        "FORGE_PULL_PATHS": json.dumps([str(root)]),
        "FORGE_PULL_PRIVATE_HOSTS": "127.0.0.1",  # the loopback file server
        "FORGE_HF_ENDPOINT": "http://127.0.0.1:9",  # never the real hub from tests
        "FORGE_THREADS": "1",
        "FORGE_KEEP_ALIVE": "600",
    }
    log = root.parent / "tf-serve.log"
    with forge(["serve"], env, log, timeout=120) as (_, url):
        for spec in ("dense-saved", "dense-keras.keras", "encoder"):
            r = httpx.post(
                f"{url}/api/pull", json={"model": str(root / spec), "stream": False}, timeout=120
            )
            assert r.status_code == 200, r.text
        yield Served(url, root)


def infer(url: str, model: str, x: Any, **extra: Any) -> httpx.Response:
    tensor = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    body = {"inputs": [{**tensor, "data": x.reshape(-1).tolist()}], **extra}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=120)


@needs_tf
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "output"), [("dense-saved", "output_0"), ("dense-keras", "scores")]
)
def test_a_keras_model_answers_with_tensorflows_numbers(
    served: Served, model: str, output: str
) -> None:
    meta = httpx.get(f"{served.url}/v2/models/{model}").json()
    assert meta["platform"] == "tensorflow"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": output, "datatype": "FP32", "shape": [-1, 2]}]

    x, expected = served.reference("x"), served.reference(model.removeprefix("dense-"))
    r = infer(served.url, model, x)
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == (output, "FP32", [5, 2])
    assert np.allclose(np.array(out["data"]).reshape(5, 2), expected, atol=1e-5)

    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is a dev need")
    client = httpclient.InferenceServerClient(url=served.url.removeprefix("http://"))
    assert client.is_model_ready(model)
    given = httpclient.InferInput("features", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    answer = client.infer(model, [given], outputs=[httpclient.InferRequestedOutput(output)])
    got = answer.as_numpy(output)
    assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-5)


@needs_tf
@pytest.mark.slow
@pytest.mark.parametrize("model", ["dense-saved", "dense-keras"])
def test_a_wrong_shape_or_dtype_is_a_400_naming_the_input(served: Served, model: str) -> None:
    r = infer(served.url, model, np.zeros((2, 3), np.float32))
    assert r.status_code == 400, r.text
    assert "input 'features' must have shape [?, 4], not [2, 3]" in r.json()["error"]
    tensor = {"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}
    r = httpx.post(f"{served.url}/v2/models/{model}/infer", json={"inputs": [tensor]})
    assert r.status_code == 400, r.text
    assert "input 'features' must be FP32, not INT64" in r.json()["error"]


@needs_tf
@pytest.mark.slow
def test_a_keras_file_pulled_from_a_url_loads_from_its_blob(
    served: Served, http_server: FileServer
) -> None:
    url = http_server.add(
        "/models/dense-url.keras", (served.root / "dense-keras.keras").read_bytes()
    )
    r = httpx.post(f"{served.url}/api/pull", json={"model": url, "stream": False}, timeout=120)
    assert r.status_code == 200, r.text
    meta = httpx.get(f"{served.url}/v2/models/dense-url").json()
    assert [o["name"] for o in meta["outputs"]] == ["scores"]  # read at pull, from the blob
    x = served.reference("x")
    r = infer(served.url, "dense-url", x)
    assert r.status_code == 200, r.text
    got = np.array(r.json()["outputs"][0]["data"]).reshape(5, 2)
    assert np.allclose(got, served.reference("keras"), atol=1e-5)


@needs_tf
@pytest.mark.slow
def test_a_string_signature_with_vectors_out_embeds(served: Served) -> None:
    meta = httpx.get(f"{served.url}/v2/models/encoder").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 8]}]
    r = httpx.post(
        f"{served.url}/api/embed", json={"model": "encoder", "input": TEXTS}, timeout=120
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    expected = served.reference("vectors")
    assert np.allclose(np.array(answer["embeddings"]), expected, atol=1e-5)
    assert answer["prompt_eval_count"] == sum(len(t.split()) for t in TEXTS)
    assert np.linalg.norm(expected[0]) != pytest.approx(1.0)  # as the model gives them

    tensor = {"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS[:2]}
    r = httpx.post(f"{served.url}/v2/models/encoder/infer", json={"inputs": [tensor]})
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert np.allclose(np.array(out["data"]).reshape(2, 8), expected[:2], atol=1e-5)

    r = httpx.post(f"{served.url}/api/embed", json={"model": "dense-saved", "input": ["a"]})
    assert r.status_code == 400 and "cannot embed; it supports: infer" in r.json()["error"]
