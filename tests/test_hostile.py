"""Hostile inputs, one test per limit: each is a clear 400 naming its setting, and what real
clients send (nulls, Ollama's -2) is accepted. Against a real server over null models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferrousforge as ff
from ferrousforge.backends.templates import render_go_template
from ferrousforge.errors import InvalidTemplate

from .apiserver import Running, running
from .nullmodels import add_null_model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "echo:1", {})
    add_null_model(home, "slow:1", {"reply": "tok " * 400, "token_delay": 0.01})
    settings = ff.Settings(home=home, max_embed_tokens=50, max_num_ctx=8192)
    with running(settings) as srv:
        yield srv


def post(srv: Running, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, timeout=60)


def refused(r: httpx.Response, setting: str) -> str:
    """The one-line error of a 400 that names ``setting``."""
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert setting in message and "\n" not in message, message
    return str(message)


GEN = {"model": "echo:1", "prompt": "a b", "stream": False}


# -- what real clients send --------------------------------------------------------------


def test_nulls_are_not_set_as_ollama_reads_them(server: Running) -> None:
    options = {"stop": None, "temperature": None, "num_ctx": None, "mirostat": None}
    r = post(server, "/api/embed", {"model": "echo:1", "input": "a b", "options": options})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 1
    chat = {"model": "echo:1", "messages": [{"role": "user", "content": "hi there"}]}
    r = post(server, "/api/chat", chat | {"options": options, "stream": None, "format": None})
    assert r.status_code == 200
    r = post(server, "/api/generate", GEN | {"keep_alive": None, "raw": None, "images": None})
    assert r.status_code == 200 and r.json()["response"] == "a b "
    body = {"model": "echo:1", "messages": [{"role": "user", "content": "x"}], "stop": None}
    r = post(server, "/v1/chat/completions", body | {"max_tokens": None, "n": None})
    assert r.status_code == 200


def test_langchain_ollama_clients_work(server: Running) -> None:
    """LangChain's OllamaEmbeddings sends ``options: {"stop": null, ...}`` on every call."""
    lc = pytest.importorskip("langchain_ollama")
    embedder = lc.OllamaEmbeddings(model="echo:1", base_url=server.url)
    chat = lc.ChatOllama(model="echo:1", base_url=server.url)
    try:
        vectors = embedder.embed_documents(["a cat", "a dog"])
        assert len(vectors) == 2 and vectors[0] != vectors[1]
        assert chat.invoke("hello there").content == "hello there "
    finally:  # their httpx clients are never closed by LangChain itself
        embedder._client._client.close()
        chat._client._client.close()


def test_num_predict_minus_two_fills_the_context(server: Running) -> None:
    r = post(server, "/api/generate", GEN | {"options": {"num_predict": -2}})
    assert r.status_code == 200 and r.json()["eval_count"] == 2


# -- one test per limit ------------------------------------------------------------------


def test_stop_sequences_are_bounded(server: Running) -> None:
    r = post(server, "/api/generate", GEN | {"options": {"stop": [str(i) for i in range(17)]}})
    refused(r, "max_stops")
    r = post(server, "/api/generate", GEN | {"options": {"stop": ["x" * 257]}})
    refused(r, "max_stop_length")
    r = post(server, "/api/generate", GEN | {"options": {"stop": ["b"] * 16}})
    assert r.status_code == 200 and r.json()["response"] == "a "


def test_template_is_bounded_and_parsed_in_linear_time(server: Running) -> None:
    r = post(server, "/api/generate", GEN | {"template": " " * 40_000 + "{{ .Prompt }}"})
    refused(r, "max_template_length")
    # 30 kB of spaces: the old backtracking regex took minutes on this, holding the GIL
    r = post(server, "/api/generate", GEN | {"template": " " * 30_000 + "{{ .Prompt }}"})
    assert r.status_code == 200


@pytest.mark.timeout(20)
def test_template_rendering_is_linear() -> None:
    for text in (" " * 200_000, "{{" + " " * 200_000, "{{ if .System }}" * 20_000):
        with pytest.raises(InvalidTemplate):  # unclosed: found in one pass, not by backtracking
            render_go_template(text + "{{- ", Prompt="p")
    filled = render_go_template(" \n " * 100_000 + "{{- .Prompt -}}\n x", Prompt="p")
    assert filled == "px"
    nested = "{{ if .System }}S{{ if .Prompt }}P{{ else }}-{{ end }}{{ else }}none{{ end }}"
    assert render_go_template(nested, System="s", Prompt="") == "S-"
    assert render_go_template(nested, System="", Prompt="p") == "none"


@pytest.mark.parametrize(
    ("fmt", "setting"),
    [
        ({"type": "string", "maxLength": 3_000_000_000}, "max_schema_repeat"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 5000}, "max_schema_repeat"),
        ({"type": "string", "pattern": "^a{1,100000}$"}, "max_schema_repeat"),
        ({"type": "object", "maxProperties": 1e12}, "max_schema_repeat"),
        ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(1200)}},
         "max_schema_nodes"),
    ],
)  # fmt: skip
def test_format_schemas_are_bounded_before_a_grammar_is_built(
    server: Running, fmt: dict[str, Any], setting: str
) -> None:
    refused(post(server, "/api/generate", GEN | {"format": fmt}), setting)


def test_format_depth_refs_and_empty_enums(server: Running) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    refused(post(server, "/api/generate", GEN | {"format": deep}), "max_schema_depth")
    remote = {"$ref": "https://example.com/schema.json"}
    r = post(server, "/api/generate", GEN | {"format": remote})
    assert r.status_code == 400 and "local $ref" in r.json()["error"]
    empties: list[dict[str, Any]] = [
        {"enum": []},
        {"type": "object", "properties": {"a": {"anyOf": []}}},
    ]
    for empty in empties:
        r = post(server, "/api/generate", GEN | {"format": empty})
        assert r.status_code == 400 and "matches nothing" in r.json()["error"]
    openai = {"type": "json_schema", "json_schema": {"schema": {"enum": []}}}
    r = post(server, "/v1/chat/completions", {**GEN, "messages": [{"role": "user", "content": "x"}],
                                              "response_format": openai})  # fmt: skip
    assert r.status_code == 400 and "matches nothing" in r.json()["error"]["message"]


def test_embedding_inputs_and_tokens_are_bounded(server: Running) -> None:
    start = time.monotonic()
    many = {"model": "echo:1", "input": ["w"] * 200_000}
    refused(post(server, "/api/embed", many), "max_embed_inputs")
    assert time.monotonic() - start < 30  # refused, not embedded
    r = post(server, "/api/embed", {"model": "echo:1", "input": ["one two"] * 26})
    refused(r, "max_embed_tokens")  # 52 words, over the 50 this server allows
    r = post(server, "/v1/embeddings", {"model": "echo:1", "input": ["one two"] * 26})
    refused(r, "max_embed_tokens")
    assert post(server, "/api/embed", {"model": "echo:1", "input": ["one two"] * 25}).is_success


def test_num_ctx_and_num_predict_are_bounded(server: Running) -> None:
    refused(post(server, "/api/generate", GEN | {"options": {"num_ctx": 10**9}}), "max_num_ctx")
    r = post(server, "/api/generate", GEN | {"options": {"num_predict": 10**12}})
    refused(r, "max_num_predict")
    r = post(server, "/v1/completions", {"model": "echo:1", "prompt": "a", "max_tokens": 10**12})
    refused(r, "max_num_predict")


@pytest.mark.parametrize("keep_alive", ["1e400", 10**400, "9999999999h", "1e400s"])
def test_keep_alive_out_of_range_is_a_json_400(server: Running, keep_alive: Any) -> None:
    body = GEN | {"keep_alive": keep_alive}
    if keep_alive == "1e400":  # a JSON number too large for a float: json.loads gives inf
        content = '{"model": "echo:1", "prompt": "a", "stream": false, "keep_alive": 1e400}'
        r = httpx.post(server.url + "/api/generate", content=content, timeout=30)
    else:
        r = post(server, "/api/generate", body)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert "keep_alive" in r.json()["error"] or "duration" in r.json()["error"]
    r = post(server, "/api/generate", {"model": "echo:1", "keep_alive": "-1"})  # forever: fine
    assert r.status_code == 200


def test_a_frozen_request_does_not_freeze_others(server: Running) -> None:
    """The server keeps answering while a long stream and refused requests go on."""
    stop = threading.Event()

    def stream() -> None:
        body = {"model": "slow:1", "prompt": "x"}
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    t = threading.Thread(target=stream)
    t.start()
    try:
        for _ in range(5):
            start = time.monotonic()
            assert httpx.get(server.url + "/health", timeout=10).status_code == 200
            assert time.monotonic() - start < 2
            refused(post(server, "/api/generate", GEN | {"format": {"maxLength": 1e9}}),
                    "max_schema_repeat")  # fmt: skip
    finally:
        stop.set()
        t.join(30)


def test_limits_are_settings(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {})
    with running(ff.Settings(home=tmp_path, max_stops=1, max_embed_inputs=2)) as srv:
        refused(post(srv, "/api/generate", GEN | {"options": {"stop": ["a", "b"]}}), "max_stops")
        refused(
            post(srv, "/api/embed", {"model": "echo:1", "input": ["a"] * 3}), "max_embed_inputs"
        )
