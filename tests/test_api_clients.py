"""The official ``ollama`` and ``openai`` clients, used as they are, against a real server
running the tiny GGUF (real llama.cpp) and null models."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

import ferrousforge as ff

from .apiserver import Running, running
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")
    base = tmp_path_factory.getbasetemp()
    settings = ff.Settings(home=home, threads=1, keep_alive=600, pull_paths=[base])
    with ff.Engine(settings) as engine:
        engine.pull(str(gguf), name="tiny")
    add_null_model(home, "echo:1", {})
    with running(settings) as srv:
        yield srv


@pytest.fixture
def oll(server: Running) -> Iterator[Any]:  # Any: the tests check values, not client types
    client = ollama.Client(host=server.url)
    yield client
    client._client.close()


@pytest.fixture
def oai(server: Running) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_ollama_generate_stream_and_not(oll: Any) -> None:
    whole = oll.generate(model="tiny", prompt="the hot word", raw=True, options=GREEDY)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 12
    assert whole.response and whole.context and len(whole.context) > 12
    assert whole.eval_duration > 0 and 0 < whole.prompt_eval_duration <= whole.total_duration
    parts = list(
        oll.generate(model="tiny", prompt="the hot word", raw=True, options=GREEDY, stream=True)
    )
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].eval_count == 12


def prompt_counts(server: Running, route: str, body: dict[str, Any]) -> tuple[int, int]:
    """The prompt tokens a request evaluated and those it found in the prompt cache."""
    r = httpx.post(server.url + route, json=body | {"stream": False}, timeout=30).json()
    return r["prompt_eval_count"], r.get("prompt_cached", 0)


def test_ollama_chat_stream_and_not(oll: Any, server: Running) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    whole = oll.chat(model="tiny", messages=msgs, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content
    parts = list(oll.chat(model="tiny", messages=msgs, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    # the same prompt again: all of it but its last token comes from the prompt cache
    evaluated, cached = prompt_counts(server, "/api/chat", {"model": "tiny", "messages": msgs})
    assert parts[-1].done and parts[-1].prompt_eval_count == evaluated == 1
    assert whole.prompt_eval_count <= evaluated + cached and cached > 1


def test_ollama_embed_list_show_ps(oll: Any) -> None:
    e = oll.embed(model="tiny", input=["the hot word", "she said"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 64
    legacy = oll.embeddings(model="tiny", prompt="the hot word")
    assert max(abs(a - b) for a, b in zip(legacy.embedding, e.embeddings[0], strict=True)) < 1e-4
    names = {m.model for m in oll.list().models}
    assert {"tiny:latest", "echo:1"} <= names
    shown = oll.show("tiny")
    assert shown.details.family == "llama" and "im_start" in (shown.template or "")
    assert "tiny:latest" in {m.model for m in oll.ps().models}


def test_ollama_copy_delete_and_errors(oll: Any) -> None:
    oll.copy("tiny", "tiny-copy:v1")
    assert "tiny-copy:v1" in {m.model for m in oll.list().models}
    oll.delete("tiny-copy:v1")
    assert "tiny-copy:v1" not in {m.model for m in oll.list().models}
    with pytest.raises(ollama.ResponseError) as e:
        oll.generate(model="missing", prompt="x")
    assert e.value.status_code == 404 and "missing" in e.value.error


def test_ollama_pull_streams_progress_and_version(
    oll: Any, server: Running, tmp_path: Path
) -> None:
    path = write_tiny_gguf(tmp_path / "Pulled.gguf")
    events = list(oll.pull(str(path), stream=True))
    statuses = [e.status for e in events]
    assert statuses[0].startswith("hashing") and statuses[-1] == "success"
    assert any(e.completed and e.total for e in events)
    assert "pulled:latest" in {m.model for m in oll.list().models}
    assert oll.pull(str(path)).status == "success"  # stream=False
    r = httpx.post(server.url + "/api/pull", json={"model": "no/such:model"})
    assert r.status_code == 404 and r.json()["error"].startswith("model 'no/such:model'")
    assert httpx.get(server.url + "/api/version").json() == {"version": ff.__version__}


def test_ollama_load_and_unload_with_empty_prompt(server: Running, oll: Any) -> None:
    r = oll.generate(model="echo:1", prompt="")
    assert r.done and r.done_reason == "load"
    assert "echo:1" in {m.model for m in oll.ps().models}
    r = oll.generate(model="echo:1", prompt="", keep_alive=0)
    assert r.done_reason == "unload"
    assert "echo:1" not in {m.model for m in oll.ps().models}


def test_openai_chat_and_stream_with_usage(oai: Any) -> None:
    msgs: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    whole = oai.chat.completions.create(
        model="tiny",
        messages=msgs,
        max_tokens=10,
        temperature=0,
    )
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 10
    stream = oai.chat.completions.create(
        model="tiny",
        messages=msgs,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    assert chunks[-2].choices[0].finish_reason == "length"


def test_openai_completions_embeddings_models(oai: Any) -> None:
    c = oai.completions.create(model="tiny", prompt="the hot word", max_tokens=6, temperature=0)
    assert c.choices[0].text and c.usage is not None and c.usage.completion_tokens == 6
    e = oai.embeddings.create(model="tiny", input=["a", "b"])
    assert [d.index for d in e.data] == [0, 1] and len(e.data[0].embedding) == 64
    b64 = oai.embeddings.create(model="tiny", input="a", encoding_format="base64")
    raw = base64.b64decode(str(b64.data[0].embedding))
    floats = struct.unpack("<64f", raw)  # little-endian float32, as OpenAI sends
    assert max(abs(a - b) for a, b in zip(floats, e.data[0].embedding, strict=True)) < 1e-5
    assert {"tiny:latest", "echo:1"} <= {m.id for m in oai.models.list()}
    assert oai.models.retrieve("tiny").id == "tiny:latest"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_json_format_and_schema_are_enforced(oll: Any, oai: Any) -> None:
    schema = {"type": "string", "enum": ["yes", "no"]}
    r = oll.generate(
        model="tiny",
        prompt="the",
        raw=True,
        format=schema,
        options={"temperature": 0, "num_predict": 20},
    )
    assert json.loads(r.response) in ("yes", "no")
    r = oll.generate(
        model="tiny",
        prompt="the",
        raw=True,
        format="json",
        options={"temperature": 0, "num_predict": 20},
    )
    assert r.response.lstrip().startswith("{")
    out = oai.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "ok?"}],
        temperature=0,
        max_tokens=20,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        },
    )
    assert json.loads(out.choices[0].message.content or "") in ("yes", "no")


def test_template_override_and_context(oll: Any, server: Running) -> None:
    by_template = oll.generate(
        model="tiny", prompt="hot", template="Q: {{ .Prompt }} A:", options=GREEDY
    )
    by_hand = oll.generate(model="tiny", prompt="Q: hot A:", raw=True, options=GREEDY)
    assert by_template.response == by_hand.response
    first = oll.generate(model="tiny", prompt="the hot word", raw=True, options=GREEDY)
    body = {"model": "tiny", "prompt": " and", "raw": True, "context": first.context}
    evaluated, cached = prompt_counts(server, "/api/generate", body | {"options": GREEDY})
    alone = oll.generate(model="tiny", prompt=" and", raw=True, options={"num_predict": 0})
    # the continuation carries no second BOS; the first answer's cells are reused
    assert evaluated + cached == len(first.context or []) + len(alone.context or []) - 1
    assert cached >= len(first.context or []) - 1


def test_streaming_wire_format(server: Running) -> None:
    with httpx.stream(
        "POST", server.url + "/api/generate", json={"model": "echo:1", "prompt": "a b c"}
    ) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert r.headers["content-type"] == "application/x-ndjson"
    assert [x["response"] for x in lines] == ["a ", "b ", "c ", ""]
    assert lines[-1]["done"] and isinstance(lines[-1]["eval_duration"], int)
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "echo:1", "stream": True, "messages": [{"role": "user", "content": "x y"}]},
    ) as r:
        body = r.read().decode()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = body.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


def test_mid_stream_error_becomes_an_error_line(server: Running, tmp_path: Path) -> None:
    add_null_model(server.engine.settings.home, "flaky:1", {"reply": "a b c d", "fail_after": 2})
    with httpx.stream(
        "POST", server.url + "/api/generate", json={"model": "flaky:1", "prompt": "x"}
    ) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert r.status_code == 200
    assert [x.get("response") for x in lines[:2]] == ["a ", "b "]
    assert "failed after 2 tokens" in lines[-1]["error"]
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "flaky:1", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as r:
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert "failed after 2 tokens" in json.loads(events[-2][6:])["error"]["message"]


def test_errors_keep_their_status_before_streaming(server: Running) -> None:
    r = httpx.post(
        server.url + "/api/generate", json={"model": "tiny", "prompt": "word " * 200, "raw": True}
    )
    assert r.status_code == 400
    assert "longer than the context of 512 tokens" in r.json()["error"]
    r = httpx.post(
        server.url + "/api/generate", json={"model": "tiny", "prompt": "x", "images": ["aGk="]}
    )
    assert r.status_code == 400 and "images are not supported" in r.json()["error"]
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.url + "/api/generate", json={"model": "tiny", "options": {"top_p": 7}})
    assert r.status_code == 400 and "top_p" in r.json()["error"]
