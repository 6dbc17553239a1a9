"""Tool calls parsed out of answers, for Ollama's and OpenAI's clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

import ferrousforge as ff
from ferrousforge.toolcalls import extract_tool_calls

from .apiserver import Running, running
from .nullmodels import add_null_model

CALL = '<tool_call> {"name": "get_weather", "arguments": {"city": "Paris"}} </tool_call>'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_extract() -> None:
    text = f"Let me check. {CALL}"
    assert extract_tool_calls(text) == (
        "Let me check.",
        [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    )
    two = (
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'
        '<tool_call>{"name": "b"}</tool_call>'
    )
    assert [c["function"] for c in extract_tool_calls(two)[1]] == [
        {"name": "a", "arguments": {"x": 1}},
        {"name": "b", "arguments": {}},
    ]
    broken = "<tool_call>{not json}</tool_call>"
    assert extract_tool_calls(broken) == (broken, [])
    assert extract_tool_calls("plain") == ("plain", [])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "caller:1", {"reply": f"Checking. {CALL}"})
    with running(ff.Settings(home=home)) as srv:
        yield srv


def test_ollama_tool_calls(server: Running) -> None:
    client: Any = ollama.Client(host=server.url)
    r = client.chat(model="caller:1", messages=ASK, tools=TOOLS)
    [call] = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert r.message.content == "Checking."
    last = list(client.chat(model="caller:1", messages=ASK, tools=TOOLS, stream=True))[-1]
    assert last.message.tool_calls[0].function.name == "get_weather"
    plain = client.chat(model="caller:1", messages=ASK)  # no tools asked: no parsing
    assert "<tool_call>" in plain.message.content and not plain.message.tool_calls
    client._client.close()


def test_openai_tool_calls(server: Running) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        client: Any = c
        r = client.chat.completions.create(model="caller:1", messages=ASK, tools=TOOLS)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        chunks = list(
            client.chat.completions.create(model="caller:1", messages=ASK, tools=TOOLS, stream=True)
        )
        final = [x for x in chunks if x.choices and x.choices[0].finish_reason][-1]
        assert final.choices[0].finish_reason == "tool_calls"
        assert final.choices[0].delta.tool_calls[0].function.name == "get_weather"
