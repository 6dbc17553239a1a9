"""One suite for every engine a client can hold: the same test bodies run against the
in-process ``Engine``, ``RemoteEngine`` over ``forge serve`` and through the Jupyter server
extension's proxy, and the async ``AsyncEngine`` and ``AsyncRemoteEngine`` (driven from a loop
thread, so each body is written once). Each implementation has a store of its own, with the
same null models and a GGUF file it may pull."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ferrousforge as ff
from ferrousforge.async_client import AsyncRemoteEngine
from ferrousforge.client import RemoteEngine
from ferrousforge.errors import (
    EngineUnreachable,
    InferenceError,
    InvalidModelFile,
    InvalidTensor,
    LimitExceeded,
    ModelNotFound,
    RequestError,
    UnsupportedTask,
)
from ferrousforge.interface import AsyncEngineClient, EngineClient
from ferrousforge.progress import Progress
from ferrousforge.store.policy import PullPolicy
from ferrousforge.sync_engine import LoopThread

from .apiserver import running
from .labharness import jupyter_server
from .nullmodels import add_null_model
from .tensormodels import images, onnxruntime_outputs, write_classifier
from .tinymodel import write_tiny_gguf

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_REPLY = (
    'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
)
IMPLEMENTATIONS = ["in-process", "async-in-process", "forge-serve", "async-forge-serve", "jupyter"]


def stock(home: Path, root: Path) -> None:
    """The models every implementation's store starts with, and a GGUF file to pull."""
    add_null_model(home, "echo:1", {})
    add_null_model(home, "tools:1", {"reply": TOOL_REPLY})
    think = "{% if enable_thinking %}<think>{% endif %}"  # a template with thinking markers
    add_null_model(home, "thinker:1", {"reply": "<think> hmm </think> Four."}, think)
    add_null_model(home, "broken:1", {"reply": "one two three four", "fail_after": 2})
    write_tiny_gguf(root / "tiny.gguf")


class Blocking:
    """An ``AsyncEngineClient`` behind the blocking ``EngineClient`` methods, on a loop
    thread: how the suite runs the async implementations with the same bodies."""

    def __init__(self, make: Any) -> None:
        self._loop = LoopThread()
        self._engine: AsyncEngineClient = self._loop.run(make())
        assert isinstance(self._engine, AsyncEngineClient)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._engine, name)
        return lambda *a, **kw: self._loop.run(method(*a, **kw))

    def generate(self, model: str, prompt: str, *, stream: bool = False, **kw: Any) -> Any:
        if stream:
            return self._loop.iterate(self._engine.generate_stream(model, prompt, **kw))
        return self._loop.run(self._engine.generate(model, prompt, **kw))

    def chat(self, model: str, messages: Any, *, stream: bool = False, **kw: Any) -> Any:
        if stream:
            return self._loop.iterate(self._engine.chat_stream(model, messages, **kw))
        return self._loop.run(self._engine.chat(model, messages, **kw))

    def close(self) -> None:
        self._loop.run(self._engine.close())
        self._loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home, root = tmp_path_factory.mktemp("serve-home"), tmp_path_factory.mktemp("serve-root")
    stock(home, root)
    with running(ff.Settings(home=home, pull_paths=[root], keep_alive=600)) as srv:
        yield srv.url, root


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A real ``jupyter server`` with the extension; its engine is reached at /forge/."""
    pytest.importorskip("jupyter_server", reason="the jupyter extra is not installed")
    home, root = tmp_path_factory.mktemp("jupyter-home"), tmp_path_factory.mktemp("root")
    stock(home, root)
    token = "conformance-token"
    with jupyter_server(home, root, token, "ferrousforge.notebook.jupyter_ext") as url:
        yield f"{url}/forge", token, root


@pytest.fixture(params=IMPLEMENTATIONS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EngineClient, Path]]:
    """An engine client, and the folder its engine may pull files from."""
    kind = request.param
    if kind in ("in-process", "async-in-process"):
        home, root = tmp_path / "home", tmp_path / "root"
        root.mkdir()
        stock(home, root)
        settings = ff.Settings(home=home, keep_alive=600)
        if kind == "in-process":
            client: Any = ff.Engine(settings)
        else:

            async def make() -> ff.AsyncEngine:
                return ff.AsyncEngine(settings)

            client = Blocking(make)
    elif kind in ("forge-serve", "async-forge-serve"):
        url, root = request.getfixturevalue("served")
        if kind == "forge-serve":
            client = RemoteEngine(url)
        else:

            async def remote() -> AsyncRemoteEngine:
                return AsyncRemoteEngine(url)

            client = Blocking(remote)
    else:
        url, token, root = request.getfixturevalue("jupyter")
        client = RemoteEngine(url, api_key=token)
    assert isinstance(client, EngineClient)
    try:
        yield client, root
    finally:
        with contextlib.suppress(Exception):
            client.unload("echo:1")  # the module's servers are shared between tests
        client.close()


def test_list_show_and_missing_models_raise_with_their_fields(
    case: tuple[EngineClient, Path],
) -> None:
    engine, _ = case
    assert {"echo:1", "tools:1"} <= {m.name for m in engine.list()}
    assert engine.show("echo:1").format == "null"
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found") as found:
        engine.show("nope")
    assert found.value.name == "nope:latest" and found.value.status == 404
    with pytest.raises(ModelNotFound) as generating:
        engine.generate("nope", "hi")
    assert generating.value.name == "nope:latest"


def test_pulls_take_a_name_and_a_digest_pin(case: tuple[EngineClient, Path]) -> None:
    engine, root = case
    file = root / "tiny.gguf"
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    events: list[Progress] = []
    m = engine.pull(str(file), name="pinned:1", sha256=digest, progress=events.append)
    assert (m.name, m.sha256, m.format) == ("pinned:1", digest, "gguf")
    assert events and events[-1].status == "success"
    assert engine.show("pinned:1") == m
    with pytest.raises(InvalidModelFile, match="sha256 mismatch"):
        engine.pull(str(file), name="wrong:1", sha256="0" * 64)
    assert "wrong:1" not in {x.name for x in engine.list()}
    assert engine.cp("pinned:1", "copy:1").sha256 == digest
    engine.rm("copy:1")
    engine.rm("pinned:1")
    with pytest.raises(ModelNotFound):
        engine.show("copy:1")


def test_streams_end_with_their_stats_and_match_the_whole_answer(
    case: tuple[EngineClient, Path],
) -> None:
    engine, _ = case
    chunks = list(engine.generate("echo:1", "one two three", stream=True))
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and last.stats is not None
    assert (last.stats.prompt_eval_count, last.stats.eval_count) == (3, 3)
    assert last.stats.total_duration > 0
    whole = engine.generate("echo:1", "one two three")
    assert whole.text == "".join(c.text for c in chunks) == "one two three "
    assert whole.stats.eval_count == 3 and whole.done_reason == "stop"
    short = engine.chat(
        "echo:1", [{"role": "user", "content": "a b c d"}], options={"num_predict": 2}
    )
    assert (short.text, short.done_reason) == ("a b ", "length")


def test_errors_keep_their_class_and_fields_before_and_after_the_first_byte(
    case: tuple[EngineClient, Path],
) -> None:
    engine, _ = case
    with pytest.raises(LimitExceeded) as limit:
        engine.generate("echo:1", "x", options={"stop": [str(i) for i in range(40)]})
    assert limit.value.setting == "max_stops"
    stream = engine.generate("broken:1", "x", stream=True)
    with pytest.raises(InferenceError, match="failed after 2 tokens"):
        list(stream)


def test_chat_with_tools_answers_parsed_calls(case: tuple[EngineClient, Path]) -> None:
    engine, _ = case
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = engine.chat("tools:1", messages, tools=[TOOL])
    assert r.tool_calls == [CALL]
    assert r.text == "Checking."
    last = list(engine.chat("tools:1", messages, tools=[TOOL], stream=True))[-1]
    assert last.done and last.tool_calls == [CALL]
    plain = engine.chat("tools:1", messages)  # no tools asked: the text as written
    assert plain.tool_calls is None and "<tool_call>" in plain.text


def test_thinking_comes_apart_from_the_answer(case: tuple[EngineClient, Path]) -> None:
    engine, _ = case
    messages = [{"role": "user", "content": "2+2?"}]
    r = engine.chat("thinker:1", messages)
    assert (r.thinking, r.text) == ("hmm ", "Four. ")
    chunks = list(engine.chat("thinker:1", messages, stream=True))
    assert "".join(c.thinking for c in chunks) == "hmm " and chunks[-1].done
    assert "".join(c.text for c in chunks) == "Four. "
    quiet = engine.generate("thinker:1", "2+2?", think=False)
    assert (quiet.thinking, quiet.text) == ("", "Four. ")
    with pytest.raises(UnsupportedTask, match="does not support thinking"):
        engine.chat("echo:1", messages, think=True)


def test_load_ps_unload_tokens_and_embeddings(case: tuple[EngineClient, Path]) -> None:
    engine, _ = case
    row = engine.load("echo:1", backend="null", device="cpu", keep_alive="1h", parallel=2)
    assert (row.name, row.backend, row.device) == ("echo:1", "null", "cpu")
    assert "echo:1" in {m.name for m in engine.ps()}
    assert "cpu" in {d.id for d in engine.devices()}
    assert engine.tokenize("echo:1", "hi") == [104, 105]
    assert engine.detokenize("echo:1", [104, 105]) == "hi"
    vectors = engine.embed("echo:1", ["a b", "c"])
    assert len(vectors.embeddings) == 2 and vectors.stats.prompt_eval_count == 3
    assert engine.unload("echo:1") is True
    assert engine.unload("echo:1") is False
    assert "echo:1" not in {m.name for m in engine.ps()}


def test_rerank_orders_documents_best_first(case: tuple[EngineClient, Path]) -> None:
    engine, _ = case
    ranking = engine.rerank("echo:1", "a b", ["c", "a b", "d e"], top_n=2)
    assert ranking.scoring == "cosine"  # echo:1 embeds; it is no cross-encoder
    assert [r.index for r in ranking.results][:1] == [1] and len(ranking.results) == 2
    assert ranking.results[0].document == "a b" and ranking.results[0].score == pytest.approx(1)
    assert ranking.stats.prompt_eval_count == 7  # the query's words and the documents'
    with pytest.raises(RequestError, match="documents is empty"):
        engine.rerank("echo:1", "a b", [])


def test_infer_checks_tensors_and_gives_onnxruntimes_numbers(
    case: tuple[EngineClient, Path],
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    engine, root = case
    graph = write_classifier(root / "classifier.onnx")
    m = engine.pull(str(graph), name="cls:1")
    assert [(s.name, s.datatype, s.shape) for s in m.metadata.input_shapes] == [
        ("images", "FP32", [-1, 3, 8, 8])
    ]
    x = images(2)
    expected = onnxruntime_outputs(graph, {"images": x})
    whole = engine.infer("cls:1", {"images": x}, keep_alive="1m")
    assert list(whole.tensors) == ["logits", "probabilities"]
    for name, value in expected.items():
        np.testing.assert_allclose(whole.tensors[name], value, rtol=1e-6)
    listed = engine.infer("cls:1", {"images": x.tolist()}, outputs=["probabilities"])
    assert list(listed.tensors) == ["probabilities"]
    np.testing.assert_allclose(listed.tensors["probabilities"], expected["probabilities"], 1e-6)
    with pytest.raises(InvalidTensor, match="'images' must have shape"):
        engine.infer("cls:1", {"images": x[:, :1]})
    with pytest.raises(InvalidTensor, match="unknown output 'nope'"):
        engine.infer("cls:1", {"images": x}, outputs=["nope"])
    with pytest.raises(UnsupportedTask, match="does not take tensors"):
        engine.infer("echo:1", {"x": x})


def test_a_keyword_an_engine_cannot_honour_raises(
    case: tuple[EngineClient, Path], request: pytest.FixtureRequest
) -> None:
    engine, root = case
    if "forge-serve" in request.node.name or "jupyter" in request.node.name:
        # the server applies its own pull policy: a remote client cannot pass one
        with pytest.raises(TypeError, match="policy"):
            engine.pull(str(root / "tiny.gguf"), policy=PullPolicy())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown option 'temprature'"):
        engine.generate("echo:1", "x", options={"temprature": 0})
    with pytest.raises(TypeError, match="load"):
        engine.generate("echo:1", "x", load={"backend": "null"})  # type: ignore[call-overload]


class _Truncated(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the first lines of a stream, then hangs up."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        self.wfile.write(b'{"model":"m","response":"half","done":false}\n')
        self.wfile.write(b'{"status":"pulling","total":10,"completed":5}\n')

    def log_message(self, *args: Any) -> None:
        pass


def test_a_remote_stream_that_ends_without_its_last_line_raises() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with RemoteEngine(f"http://127.0.0.1:{server.server_port}") as remote:
            with pytest.raises(EngineUnreachable, match="stream ended before its last line"):
                remote.generate("m", "x")
            with pytest.raises(EngineUnreachable, match="pull ended before its last line"):
                remote.pull("anything:1")
    finally:
        server.shutdown()
        server.server_close()
