"""RemoteEngine against a real `forge serve` app: the same answers as the in-process Engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ferrousforge as ff
from ferrousforge.client import RemoteEngine
from ferrousforge.errors import ConfigError, EngineUnreachable, ForgeError, ModelNotFound
from ferrousforge.progress import Progress

from .apiserver import Running, running
from .conftest import FileServer
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "echo:1", {})
    add_null_model(home, "slow:1", {"reply": " ".join(["word"] * 200), "token_delay": 0.02})
    settings = ff.Settings(home=home, keep_alive=600, pull_private_hosts=["127.0.0.1"])
    with running(settings) as srv:
        yield srv


@pytest.fixture
def remote(server: Running) -> Iterator[RemoteEngine]:
    with RemoteEngine(server.url) as engine:
        yield engine


def test_models_devices_load_unload(remote: RemoteEngine, server: Running) -> None:
    assert {m.name for m in remote.list()} == {"echo:1", "slow:1"}
    assert remote.show("echo:1").format == "null"
    assert "cpu" in {d.id for d in remote.devices()}
    row = remote.load("echo:1", backend="null", device="cpu", keep_alive="1h")
    assert (row.name, row.backend, row.device) == ("echo:1", "null", "cpu")
    assert [m.name for m in remote.ps()] == ["echo:1"]
    assert remote.unload("echo:1") is True
    assert remote.ps() == []


def test_generate_chat_embed_match_the_engine(remote: RemoteEngine, server: Running) -> None:
    chunks = list(
        remote.chat("echo:1", [{"role": "user", "content": "one two three"}], stream=True)
    )
    assert chunks[-1].done and chunks[-1].stats is not None and chunks[-1].stats.eval_count > 0
    assert "".join(c.text for c in chunks).split()[-3:] == ["one", "two", "three"]
    whole = remote.generate("echo:1", "four five", options={"num_predict": 8})
    assert whole.text.split() == ["four", "five"] and whole.done_reason == "stop"
    vectors = remote.embed("echo:1", ["a", "b"]).embeddings
    with ff.Engine(ff.Settings(home=server.engine.store.home)) as local:
        assert vectors == local.embed("echo:1", ["a", "b"]).embeddings


def test_closing_a_stream_stops_the_generation(remote: RemoteEngine, server: Running) -> None:
    stream = remote.generate("slow:1", "x", stream=True)
    first = next(stream)
    stream.close()
    assert first.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(m.in_use for m in remote.ps()):
        time.sleep(0.05)
    assert not any(m.in_use for m in remote.ps())  # its slot is free long before 200 tokens


def test_errors_keep_their_type_and_one_line(remote: RemoteEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found"):
        remote.generate("nope", "hi")
    with pytest.raises(ConfigError, match="unknown backend 'warp'"):
        remote.load("echo:1", backend="warp")
    events: list[Progress] = []
    with pytest.raises(ForgeError, match=r"missing\.gguf' not found"):  # an in-stream error
        remote.pull(str(tmp_path / "missing.gguf"), progress=events.append)
    with RemoteEngine("http://127.0.0.1:9") as dead, pytest.raises(EngineUnreachable):
        dead.list()


def test_a_url_pull_returns_the_model_the_server_stored(
    remote: RemoteEngine, http_server: FileServer, tmp_path: Path
) -> None:
    url = http_server.add("/Fetched.gguf", write_tiny_gguf(tmp_path / "t.gguf").read_bytes())
    events: list[Progress] = []
    m = remote.pull(url, progress=events.append)
    assert (m.name, m.source) == ("fetched:latest", url)
    assert events and events[-1].status == "success"
