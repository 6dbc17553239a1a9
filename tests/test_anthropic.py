"""The official ``anthropic`` SDK against ``/v1/messages``: whole and streamed answers on real
llama.cpp (the tiny GGUF), tool use and thinking on null models whose templates mark them,
token counting, structured output, keys sent as ``x-api-key``, and Anthropic's error body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

import ferrousforge as ff

from .apiserver import Running, running
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

KEY = "sk-local-anthropic"
QWEN = (
    "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}"
    "</tool_call>{% endfor %}{% endif %}"
    "{%- if m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>"
    "{%- else %}{{ m.content }}{% endif %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think></think>"
    "{%- endif %}{%- endif %}"
)
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}</tool_call>'
TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city", "unit"],
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")
    settings = ff.Settings(
        home=home,
        threads=1,
        keep_alive=600,
        pull_paths=[tmp_path_factory.getbasetemp()],
        api_keys=[KEY],
    )
    with ff.Engine(settings) as engine:
        engine.pull(str(gguf), name="tiny")
    add_null_model(home, "caller:1", {"reply": f"Let me check. {CALL}"}, QWEN)
    add_null_model(home, "thinker:1", {"reply": "<think> two and two </think> Four."}, QWEN)
    add_null_model(home, "broken:1", {"reply": "one two three four", "fail_after": 2})
    # its answer, the prompt, must hold no markup to parse: it shows calls as <call>
    echo = QWEN.replace("<tool_call>{{", "<call>{{").replace("}}</tool_call>", "}}</call>")
    echo = echo.replace("<think></think>", "<no-think/>")
    add_null_model(home, "echo:1", {"echo_prompt": True}, echo)
    with running(settings) as srv:
        yield srv


@pytest.fixture
def client(server: Running) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0) as c:
        yield c


GREEDY = {"temperature": 0, "top_k": 1}  # anthropic 2.x takes sampling fields as extras


def test_create_answers_and_counts_like_the_generation(client: Any, server: Running) -> None:
    r = client.messages.create(
        model="tiny", max_tokens=8, messages=ASK, system="Be brief.", extra_body=GREEDY
    )
    assert r.type == "message" and r.role == "assistant" and r.model == "tiny"
    [block] = r.content
    assert block.type == "text" and block.text
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 8
    counted = client.messages.count_tokens(model="tiny", messages=ASK, system="Be brief.")
    # counted from the rendered template; the generation counted what llama.cpp decoded
    assert counted.input_tokens == r.usage.input_tokens + r.usage.cache_read_input_tokens
    longer = client.messages.count_tokens(
        model="tiny", messages=[*ASK, {"role": "assistant", "content": "Sunny."}, *ASK]
    )
    assert longer.input_tokens > counted.input_tokens
    # the same answer whole and streamed (greedy), and a stop sequence cuts it
    with client.messages.stream(
        model="tiny", max_tokens=8, messages=ASK, system="Be brief.", extra_body=GREEDY
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.content[0].text == block.text and final.usage.output_tokens == 8
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_start") == 1 == kinds.count("content_block_stop")
    assert kinds[-2] == "message_delta" and final.stop_reason == "max_tokens"
    word = block.text.split()[1] if len(block.text.split()) > 1 else block.text.split()[0]
    cut = client.messages.create(
        model="tiny",
        max_tokens=8,
        messages=ASK,
        system="Be brief.",
        stop_sequences=[word],
        extra_body=GREEDY,
    )
    assert word not in cut.content[0].text
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word


def test_structured_output_through_output_config(client: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    r = client.messages.create(
        model="tiny",
        max_tokens=60,
        messages=ASK,
        output_config={"format": {"type": "json_schema", "schema": schema}},
        extra_body=GREEDY,
    )
    value = json.loads(r.content[0].text)
    assert set(value) == {"city", "sunny"} and isinstance(value["sunny"], bool)


def test_tool_use_whole_and_streamed(client: Any) -> None:
    r = client.messages.create(model="caller:1", max_tokens=64, messages=ASK, tools=[TOOL])
    text, use = r.content
    assert text.type == "text" and text.text == "Let me check."
    assert use.type == "tool_use" and use.id.startswith("toolu_") and use.name == "get_weather"
    assert use.input == {"city": "Paris", "unit": "C"} and r.stop_reason == "tool_use"
    with client.messages.stream(
        model="caller:1", max_tokens=64, messages=ASK, tools=[TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(pieces) > 1  # the arguments arrive as the model writes them
    assert json.loads("".join(pieces)) == {"city": "Paris", "unit": "C"}
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"city": "Paris", "unit": "C"}
    assert final.stop_reason == "tool_use"


def test_tool_results_reach_the_template(client: Any) -> None:
    turns = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18 degrees"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    r = client.messages.create(model="echo:1", max_tokens=500, messages=turns, tools=[TOOL])
    prompt = " ".join(r.content[0].text.split())
    assert '<call>{"name": "get_weather", "arguments": {"city": "Paris"}}</call>' in prompt
    assert "<|im_start|>tool<tool_response>18 degrees</tool_response>" in prompt
    assert prompt.index("18 degrees") < prompt.index("And tomorrow?")
    assert '"input_schema"' not in prompt and '"parameters"' in prompt  # as function tools


def test_thinking_blocks(client: Any) -> None:
    r = client.messages.create(model="thinker:1", max_tokens=64, messages=ASK)
    thinking, text = r.content
    assert thinking.type == "thinking" and thinking.thinking == "two and two "
    assert text.type == "text" and text.text == "Four. "
    with client.messages.stream(model="thinker:1", max_tokens=64, messages=ASK) as stream:
        kinds = [(e.type, getattr(e, "index", None)) for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert ("content_block_start", 0) in kinds and ("content_block_start", 1) in kinds
    off = client.messages.create(
        model="thinker:1", max_tokens=64, messages=ASK, thinking={"type": "disabled"}
    )
    assert [b.type for b in off.content] == ["text"]
    echo = client.messages.create(
        model="echo:1", max_tokens=64, messages=ASK, thinking={"type": "disabled"}
    )
    assert echo.content[0].text.strip().endswith("<no-think/>")  # the template was told
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="tiny",
            max_tokens=8,
            messages=ASK,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert "does not support thinking" in refused.value.response.json()["error"]["message"]


def test_errors_have_anthropics_shape(client: Any, server: Running) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope:1", max_tokens=8, messages=ASK)
    body = missing.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "nope:1" in body["error"]["message"]
    url = server.url + "/v1/messages"
    bad = httpx.post(url, json={"model": "tiny", "messages": ASK}, headers={"x-api-key": KEY})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.json()["error"]["message"]
    denied = httpx.post(url, json={"model": "tiny", "messages": ASK, "max_tokens": 1})
    assert denied.status_code == 401
    assert denied.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": denied.json()["error"]["message"]},
    }
    # the key as Anthropic's own clients send it, with their version header
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    ok = httpx.post(
        url, json={"model": "caller:1", "messages": ASK, "max_tokens": 4}, headers=headers
    )
    assert ok.status_code == 200 and ok.json()["type"] == "message"
    other = httpx.get(server.url + "/v1/models/nope", headers=headers)
    assert other.status_code == 404 and other.json()["error"]["type"] == "invalid_request_error"


def test_an_error_mid_stream_is_an_error_event(client: Any, server: Running) -> None:
    stream = client.messages.stream(model="broken:1", max_tokens=64, messages=ASK)
    with pytest.raises(anthropic.APIStatusError) as failed, stream as events:
        list(events)
    error: Any = failed.value.body  # the error event's data
    assert error["type"] == "error" and "failed after 2 tokens" in error["error"]["message"]
    body = {"model": "broken:1", "max_tokens": 64, "messages": ASK, "stream": True}
    with httpx.stream(
        "POST", server.url + "/v1/messages", json=body, headers={"x-api-key": KEY}
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200  # the stream had begun
    assert lines[-2] == "event: error" and json.loads(lines[-1][6:])["type"] == "error"
