"""Each route gets the request shapes its reference clients really send (what LangChain,
LiteLLM, the official SDKs and coding tools put on the wire: nulls for unset fields, fields
this server has no use for) and answers 200 in its own dialect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ferrousforge as ff

from .apiserver import Running, running
from .nullmodels import add_null_model

M = "echo:1"
USER = [{"role": "user", "content": "Hi there"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, M, {"dims": 8})
    with running(ff.Settings(home=home)) as srv:
        yield srv


# (route, body, a check on the answer): one row per client shape
CASES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "ollama chat, LangChain ChatOllama": (
        "/api/chat",
        {
            "model": M, "messages": [{"role": "user", "content": "Hi", "images": None,
                                      "tool_calls": None, "thinking": None}],
            "stream": False, "format": None, "tools": None, "think": None,
            "keep_alive": None, "options": {"stop": None, "temperature": None, "mirostat": None},
        },
        lambda r: r["message"]["content"] == "Hi ",
    ),
    "ollama chat, ollama-python with think level": (
        "/api/chat",
        {"model": M, "messages": USER, "stream": False, "think": None, "tools": [],
         "format": "", "options": {}, "keep_alive": "5m", "unknown": {"a": 1}},
        lambda r: r["done"] and r["message"]["role"] == "assistant",
    ),
    "ollama generate, with fields Ollama added later": (
        "/api/generate",
        {"model": M, "prompt": "Hi", "suffix": None, "images": None, "context": None,
         "system": None, "template": None, "raw": None, "stream": False, "think": False,
         "format": None, "options": {"num_predict": None}, "logprobs": False},
        lambda r: r["response"] == "Hi " and r["done_reason"] == "stop",
    ),
    "ollama embed": (
        "/api/embed",
        {"model": M, "input": ["a", "b"], "truncate": None, "options": None,
         "keep_alive": None, "dimensions": None},
        lambda r: len(r["embeddings"]) == 2,
    ),
    "ollama embeddings (legacy)": (
        "/api/embeddings",
        {"model": M, "prompt": "a", "options": None, "keep_alive": None},
        lambda r: len(r["embedding"]) == 8,
    ),
    "openai chat, LangChain ChatOpenAI / LiteLLM": (
        "/v1/chat/completions",
        {
            "model": M, "messages": [{"role": "system", "content": "Be brief.", "name": None},
                                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "stream": False, "n": 1, "temperature": None, "top_p": None, "stop": None,
            "max_tokens": None, "max_completion_tokens": None, "presence_penalty": 0,
            "frequency_penalty": 0, "logit_bias": None, "logprobs": False, "user": None,
            "tools": None, "tool_choice": None, "parallel_tool_calls": None,
            "response_format": None, "seed": None, "stream_options": None,
            "reasoning_effort": None, "metadata": None, "store": False,
            "extra_field_from_a_new_sdk": True,
        },
        lambda r: r["choices"][0]["message"]["content"] == "Hi ",
    ),
    "openai chat, an agent's tool turn": (
        "/v1/chat/completions",
        {
            "model": M, "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": True,
            "messages": [*USER,
                         {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                             {"id": "c1", "type": "function",
                              "function": {"name": "f", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "done", "name": None}],
        },
        lambda r: r["choices"][0]["message"]["content"] == "done ",
    ),
    "openai completions": (
        "/v1/completions",
        {"model": M, "prompt": ["Hi"], "echo": False, "suffix": None, "best_of": None,
         "logprobs": None, "max_tokens": 16, "n": 1, "stream": False, "user": None},
        lambda r: r["choices"][0]["text"] == "Hi ",
    ),
    "openai embeddings": (
        "/v1/embeddings",
        {"model": M, "input": ["a"], "encoding_format": "float", "dimensions": None,
         "user": None},
        lambda r: len(r["data"][0]["embedding"]) == 8,
    ),
    "anthropic messages, a coding tool": (
        "/v1/messages",
        {
            "model": M, "max_tokens": 64, "stream": False,
            "system": [{"type": "text", "text": "You code.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
            "metadata": {"user_id": "u-1"}, "temperature": None, "top_p": None,
            "top_k": None, "stop_sequences": None, "tools": None, "tool_choice": None,
            "thinking": None, "service_tier": "auto", "container": None,
        },
        lambda r: r["content"] == [{"type": "text", "text": "Hi "}],
    ),
    "anthropic messages, tool results and tools": (
        "/v1/messages",
        {
            "model": M, "max_tokens": 64,
            "tools": [{"name": "f", "description": "F", "input_schema": {"type": "object"},
                       "cache_control": None}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
            "messages": [*USER,
                         {"role": "assistant", "content": [
                             {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                         {"role": "user", "content": [
                             {"type": "tool_result", "tool_use_id": "t1", "content": "ok",
                              "is_error": False}]}],
        },
        lambda r: r["content"][0]["text"] == "ok ",
    ),
    "anthropic count_tokens": (
        "/v1/messages/count_tokens",
        {"model": M, "messages": USER, "system": None, "tools": None, "thinking": None},
        lambda r: r["input_tokens"] == len("Hi there"),  # the null model counts bytes
    ),
    "openai responses, openai-python": (
        "/v1/responses",
        {"model": M, "input": "Hi", "instructions": None, "max_output_tokens": None,
         "store": None, "previous_response_id": None, "tools": [], "tool_choice": "auto",
         "parallel_tool_calls": True, "text": {"format": {"type": "text"}}, "reasoning": None,
         "truncation": "disabled", "metadata": None, "user": None, "stream": False,
         "include": None, "top_p": None, "temperature": None},
        lambda r: r["status"] == "completed" and r["output"][0]["content"][0]["text"] == "Hi ",
    ),
    "openai responses, LangChain items": (
        "/v1/responses",
        {"model": M, "store": False,
         "input": [{"type": "message", "role": "developer", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]},
        lambda r: r["output"][0]["content"][0]["text"] == "Hi ",
    ),
    "rerank, llama-server / Jina": (
        "/v1/rerank",
        {"model": M, "query": "a", "documents": ["b", "a"], "top_n": None,
         "return_documents": None},
        lambda r: r["results"][0]["index"] == 1 and r["scoring"] == "cosine",
    ),
    "rerank, Cohere objects": (
        "/api/rerank",
        {"model": M, "query": "a", "documents": [{"text": "a"}], "top_n": 1,
         "return_documents": True, "rank_fields": None, "max_chunks_per_doc": None},
        lambda r: r["results"][0]["document"]["text"] == "a",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_reference_shapes_are_accepted(case: str, server: Running) -> None:
    path, body, check = CASES[case]
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert check(r.json()), r.json()


def test_each_dialect_refuses_in_its_own_shape(server: Running) -> None:
    missing = {"model": "nope:1"}
    ollama = httpx.post(server.url + "/api/chat", json={**missing, "messages": USER})
    assert ollama.status_code == 404 and set(ollama.json()) >= {"error"}
    assert isinstance(ollama.json()["error"], str)
    openai = httpx.post(server.url + "/v1/chat/completions", json={**missing, "messages": USER})
    assert openai.status_code == 404 and openai.json()["error"]["type"] == "invalid_request_error"
    responses = httpx.post(server.url + "/v1/responses", json={**missing, "input": "Hi"})
    assert responses.status_code == 404 and responses.json()["error"]["message"]
    anthropic = httpx.post(
        server.url + "/v1/messages", json={**missing, "messages": USER, "max_tokens": 1}
    )
    assert anthropic.status_code == 404
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "not_found_error"
    # a request over a limit, and a disallowed block, in Anthropic's shape too
    long = httpx.post(
        server.url + "/v1/messages",
        json={"model": M, "messages": USER, "max_tokens": 1, "stop_sequences": ["x"] * 17},
    )
    assert long.status_code == 400 and long.json()["error"]["type"] == "invalid_request_error"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    refused = httpx.post(
        server.url + "/v1/messages",
        json={"model": M, "max_tokens": 1, "messages": [{"role": "user", "content": [image]}]},
    )
    assert refused.status_code == 400 and "'image'" in refused.json()["error"]["message"]


def test_every_dialect_is_counted_by_route(server: Running) -> None:
    for path, body, _ in CASES.values():
        httpx.post(server.url + path, json=body, timeout=30)
    metrics = httpx.get(server.url + "/metrics").text
    routes = ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses", "/v1/rerank")
    for route in (*routes, "/api/rerank"):
        assert f'route="{route}"' in metrics
