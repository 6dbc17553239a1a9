"""Custom models (``kernel/backends/custom.py``): a user's Python object served as a Mold,
registered in a notebook cell (``ff.register``) on the kernel's in-process engine, or
installed as a plugin package (``examples/forge-plugin-example``) and served over the HTTP
API by ``forge serve``. A remote engine refuses registration in one line."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import ferrousforge as ff
from ferrousforge import notebook
from ferrousforge.backends.custom import CustomBackend, as_backend
from ferrousforge.client import RemoteEngine
from ferrousforge.errors import (
    ConfigError,
    InferenceError,
    InvalidModelFile,
    InvalidTensor,
    UnsupportedTask,
)

from .labharness import forge

EXAMPLE = Path(__file__).parent.parent / "examples" / "forge-plugin-example"

# What a notebook cell holds: a class, and ff.register.
CELL = """
import ferrousforge as ff

class Lengths(ff.CustomModel):
    \"\"\"Two numbers per text: its length and its words.\"\"\"
    models = ("lengths",)

    def embed(self, texts):
        return [[float(len(t)), float(len(t.split()))] for t in texts]

ff.register(Lengths)
"""


@pytest.fixture
def kernel_engine(tmp_path: Path) -> Iterator[ff.Engine]:
    """The notebook kernel's engine: in process, on a fresh store."""
    engine = ff.Engine(ff.Settings(home=tmp_path / "home"))
    notebook.use(engine)
    try:
        yield engine
    finally:
        notebook.use(None)
        engine.close()


def test_a_model_registered_in_a_cell_serves_embed_in_process(kernel_engine: ff.Engine) -> None:
    exec(compile(CELL, "<cell>", "exec"), {"__name__": "__main__"})
    result = notebook.shared().embed("lengths", ["a cat", "the stock market"])
    assert result.embeddings == [[5.0, 2.0], [16.0, 3.0]]
    assert result.stats.prompt_eval_count == 5
    shown = kernel_engine.show("lengths")
    assert (shown.name, shown.format, shown.source) == (
        "lengths:latest",
        "lengths",
        "backend:lengths",
    )
    assert shown.metadata.model_type == "embedding"
    assert shown.metadata.description == "Two numbers per text: its length and its words."
    (row,) = kernel_engine.ps()
    assert (row.name, row.backend, row.device) == ("lengths:latest", "lengths", "cpu")
    ranking = kernel_engine.rerank("lengths", "a dog", ["the stock market", "a cat"])
    assert ranking.scoring == "cosine"  # embeddings give rerank for free


def test_tasks_come_from_the_methods(kernel_engine: ff.Engine) -> None:
    exec(compile(CELL, "<cell>", "exec"), {"__name__": "__main__"})
    with pytest.raises(UnsupportedTask, match=r"lengths:latest cannot chat; it supports: embed"):
        kernel_engine.chat("lengths", [{"role": "user", "content": "hi"}])
    assert UnsupportedTask.status == 400
    with pytest.raises(UnsupportedTask, match="cannot tokenize"):
        kernel_engine.tokenize("lengths", "hi")

    class Talker:  # no base class: any object with task methods
        def generate(self, prompt: str, options: dict[str, Any]) -> Iterator[str]:
            yield from ["you ", "said: ", prompt, " END", " more"]

        def chat(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> str:
            return f"{len(messages)} messages, temperature {options.get('temperature')}"

        def tokenize(self, text: str) -> list[int]:
            return list(text.encode())

        def detokenize(self, ids: list[int]) -> str:
            return bytes(ids).decode()

    backend = kernel_engine.register(Talker(), name="talker")
    assert backend.name == "talker" and backend.formats == {"talker"}
    answer = kernel_engine.generate("talker", "hello", options={"stop": [" END"]})
    assert (answer.text, answer.done_reason, answer.stop_sequence) == (
        "you said: hello",
        "stop",
        " END",
    )
    cut = kernel_engine.generate("talker", "hello", options={"max_tokens": 2})
    assert (cut.text, cut.done_reason) == ("you said: ", "length")
    pieces = [c.text for c in kernel_engine.generate("talker", "x", stream=True) if c.text]
    assert "".join(pieces) == "you said: x END more"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    reply = kernel_engine.chat("talker", messages, options={"temperature": 0.5})
    assert reply.text == "2 messages, temperature 0.5"
    assert kernel_engine.detokenize("talker", kernel_engine.tokenize("talker", "hé")) == "hé"
    with pytest.raises(UnsupportedTask, match="cannot embed"):
        kernel_engine.embed("talker", "hi")


def test_a_custom_model_infers_with_its_specs_checked(kernel_engine: ff.Engine) -> None:
    import numpy as np

    class Scale(ff.CustomModel):
        models = ("scale",)
        inputs = ({"name": "x", "datatype": "FP32", "shape": [-1, 2]},)
        outputs = ({"name": "y", "datatype": "FP32", "shape": [-1, 2]},)

        def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return {"y": inputs["x"] * np.float32(3), "extra": inputs["x"].sum()}

    kernel_engine.register(Scale)
    shown = kernel_engine.show("scale").metadata
    assert [(s.name, s.datatype, s.shape) for s in shown.input_shapes] == [("x", "FP32", [-1, 2])]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = kernel_engine.infer("scale", {"x": x}, outputs=["y"]).tensors
    assert list(got) == ["y"] and got["y"].tolist() == (x * 3).tolist()
    assert kernel_engine.infer("scale", {"x": [[1, 2]]}).tensors["y"].dtype == np.float32
    with pytest.raises(InvalidTensor, match="'x' must have shape \\[\\?, 2\\], not \\[2, 3\\]"):
        kernel_engine.infer("scale", {"x": x.reshape(2, 3)})
    with pytest.raises(InvalidTensor, match="missing input 'x'"):
        kernel_engine.infer("scale", {})


def test_user_errors_become_forge_errors(kernel_engine: ff.Engine) -> None:
    class Broken(ff.CustomModel):
        models = ("broken",)

        def embed(self, texts: list[str]) -> list[list[float]]:
            if texts == ["few"]:
                return []
            raise ValueError("bad input\nsecond line")

    class Unloadable(ff.CustomModel):
        def load(self) -> None:
            raise RuntimeError("weights missing")

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] for _ in texts]

    kernel_engine.register(Broken)
    kernel_engine.register(Unloadable)
    with pytest.raises(InferenceError) as failed:
        kernel_engine.embed("broken", "x")
    assert str(failed.value) == "broken:latest: embed failed: ValueError: bad input"
    assert isinstance(failed.value.__cause__, ValueError)
    with pytest.raises(InferenceError, match="returned 0 vectors for 1 inputs"):
        kernel_engine.embed("broken", "few")
    with pytest.raises(InvalidModelFile, match="unloadable:latest: load failed: RuntimeError"):
        kernel_engine.embed("unloadable", "x")
    assert "unloadable:latest" not in [m.name for m in kernel_engine.ps()]  # not half-loaded
    with pytest.raises(ConfigError, match="none of the task methods"):
        as_backend(object())


def test_registering_again_replaces_the_loaded_model(kernel_engine: ff.Engine) -> None:
    def version(n: float) -> type[ff.CustomModel]:
        class Versioned(ff.CustomModel):
            def embed(self, texts: list[str]) -> list[list[float]]:
                return [[n] for _ in texts]

        return Versioned

    kernel_engine.register(version(1.0))
    assert kernel_engine.embed("versioned", "x").embeddings == [[1.0]]
    kernel_engine.register(version(2.0))  # the cell, edited and run again
    assert kernel_engine.embed("versioned", "x").embeddings == [[2.0]]
    assert kernel_engine.backends.names().count("versioned") == 1


def test_a_remote_engine_refuses_registration_in_one_line() -> None:
    remote = RemoteEngine("http://127.0.0.1:9")
    notebook.use(remote)
    try:
        with pytest.raises(ConfigError) as refused:
            ff.register(CustomBackend(lambda: None, name="anything"))
    finally:
        notebook.use(None)
        remote.close()
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert "http://127.0.0.1:9 runs in another process" in message
    assert "`ferrousforge.backends` entry point" in message
    with pytest.raises(ConfigError, match="another process"):
        remote.register(object())


def _example() -> ModuleType:
    """The plugin's module, read from its file (for the vectors it should answer)."""
    spec = importlib.util.spec_from_file_location("example", EXAMPLE / "forge_plugin_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_plugin_package_serves_embed_over_http(tmp_path: Path) -> None:
    source, site = tmp_path / "plugin", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)  # its build files land there, not in the checkout
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "-q", "--target", str(site), str(source)]
    subprocess.run(pip, check=True, capture_output=True, timeout=120)
    env = {
        "FORGE_HOME": str(tmp_path / "home"),
        "FORGE_HF_ENDPOINT": "http://127.0.0.1:9",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    texts = ["a cat sat on the mat", "the stock market fell"]
    want = [_example().vector(t) for t in texts]
    with forge(["serve"], env, tmp_path / "serve.log") as (_, url):
        tags = httpx.get(f"{url}/api/tags", timeout=10).json()
        assert "hashvec:latest" in [m["name"] for m in tags["models"]]
        r = httpx.post(f"{url}/api/embed", json={"model": "hashvec", "input": texts}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["embeddings"] == [pytest.approx(v) for v in want]
        body = {"model": "hashvec", "input": texts[0]}
        r = httpx.post(f"{url}/v1/embeddings", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["embedding"] == pytest.approx(want[0])
        chat = {"model": "hashvec", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{url}/api/chat", json=chat | {"stream": False}, timeout=30)
        assert r.status_code == 400 and "hashvec:latest cannot chat" in r.text
