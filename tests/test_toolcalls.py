"""Tool calls parsed out of answers, for Ollama's and OpenAI's clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

import ferrousforge as ff
from ferrousforge.replies import extract_tool_calls

from .apiserver import Running, running
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

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


LLAMA3 = "<|start_header_id|>{{ tools }}<|python_tag|><|eot_id|>"
MISTRAL = "[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]"
THINKS = "{% if enable_thinking %}<think>{% endif %}"
ARGS = {"city": "Paris", "days": [1, 2]}
DIALECTS = {  # model: (its chat template, a reply in its dialect)
    "hermes:1": (
        None,
        "Checking. <tool_call>"
        + json.dumps({"name": "get_weather", "arguments": ARGS})
        + "</tool_call>",
    ),
    "llama3:1": (LLAMA3, json.dumps({"name": "get_weather", "parameters": ARGS})),
    "mistral:1": (
        MISTRAL,
        f"[TOOL_CALLS] [{json.dumps({'name': 'get_weather', 'arguments': ARGS})}]",
    ),
    "mistral:2": (MISTRAL, f"[TOOL_CALLS]get_weather[ARGS]{json.dumps(ARGS)}"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "caller:1", {"reply": f"Checking. {CALL}"})
    for name, (template, reply) in DIALECTS.items():
        add_null_model(home, name, {"reply": reply}, template)
    add_null_model(home, "thinker:1", {"reply": "<think> two and two </think> Four."}, THINKS)
    add_null_model(home, "echo:1", {"echo_prompt": True}, ECHO)
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", chat_template=ECHO)
    settings = ff.Settings(home=home, threads=1, pull_paths=[tmp_path_factory.getbasetemp()])
    with ff.Engine(settings) as engine:
        engine.pull(str(gguf), name="tiny")
    with running(settings) as srv:
        yield srv


# shows past calls and results; its own markup is <call>, which nothing parses
ECHO = (
    "{% for m in messages %}[{{ m.role }}{% if m.tool_name %}:{{ m.tool_name }}{% endif %}]"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}"
    "{{ c.function.arguments | tojson }}</call>{% endfor %}{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


@pytest.fixture
def oai(server: Running) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def oll(server: Running) -> Iterator[Any]:
    client = ollama.Client(host=server.url)
    yield client
    client._client.close()


def test_ollama_tool_calls(oll: Any) -> None:
    r = oll.chat(model="caller:1", messages=ASK, tools=TOOLS)
    [call] = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert r.message.content == "Checking."
    items = list(oll.chat(model="caller:1", messages=ASK, tools=TOOLS, stream=True))
    [with_call] = [i for i in items if i.message.tool_calls]  # sent once, when it ended
    assert not with_call.done and with_call.message.tool_calls[0].function.name == "get_weather"
    assert "".join(i.message.content for i in items).strip() == "Checking."
    plain = oll.chat(model="caller:1", messages=ASK)  # no tools asked: no parsing
    assert "<tool_call>" in plain.message.content and not plain.message.tool_calls


def test_openai_tool_calls(oai: Any) -> None:
    r = oai.chat.completions.create(model="caller:1", messages=ASK, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.content == "Checking."


@pytest.mark.parametrize("model", DIALECTS)
def test_each_dialect_streams_its_calls(model: str, oai: Any, oll: Any) -> None:
    chunks = list(oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, stream=True))
    parts = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    first, *rest = parts
    assert first.id.startswith("call_") and first.function.name == "get_weather"
    assert all(p.index == 0 and p.id is None for p in rest)
    assert len(rest) > 1  # the arguments arrive piece by piece, as the model writes them
    assert json.loads("".join(p.function.arguments for p in parts)) == ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "{" not in text and "TOOL_CALLS" not in text
    whole = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS)
    assert json.loads(whole.choices[0].message.tool_calls[0].function.arguments) == ARGS
    r = oll.chat(model=model, messages=ASK, tools=TOOLS)
    assert [c.function.arguments for c in r.message.tool_calls] == [ARGS]


def test_thinking_is_split_in_each_dialect(oai: Any, oll: Any) -> None:
    r = oll.chat(model="thinker:1", messages=ASK)
    assert r.message.thinking == "two and two " and r.message.content == "Four. "
    items = list(oll.chat(model="thinker:1", messages=ASK, stream=True))
    assert "".join(i.message.thinking or "" for i in items) == "two and two "
    assert "".join(i.message.content for i in items) == "Four. "
    assert oll.chat(model="thinker:1", messages=ASK, think=False).message.thinking is None
    gen = oll.generate(model="thinker:1", prompt="2+2?")
    assert gen.thinking == "two and two " and gen.response == "Four. "
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        oll.chat(model="caller:1", messages=ASK, think=True)
    c = oai.chat.completions.create(model="thinker:1", messages=ASK)
    message: Any = c.choices[0].message
    assert message.reasoning_content == "two and two " and message.content == "Four. "
    chunks = list(oai.chat.completions.create(model="thinker:1", messages=ASK, stream=True))
    deltas: list[Any] = [x.choices[0].delta for x in chunks if x.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "two and two "
    assert "".join(d.content or "" for d in deltas) == "Four. "


def test_tool_results_go_back_to_the_template(oai: Any, oll: Any) -> None:
    openai_turns = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
    ]
    r = oai.chat.completions.create(model="echo:1", messages=openai_turns, tools=TOOLS)
    prompt = r.choices[0].message.content
    assert '[assistant]<call>get_weather{"city": "Paris"}</call>' in prompt
    assert "[tool:get_weather]18 degrees" in prompt  # named after the call it answers
    ollama_turns = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "18 degrees"},
    ]
    again = oll.chat(model="echo:1", messages=ollama_turns, tools=TOOLS).message.content
    # the same turns (the ollama client fills in the tools' parameters, so from the user on)
    assert again.split("[user]")[1].strip() == prompt.split("[user]")[1].strip()
    assert "You may call these tools" in prompt  # this template shows no tools itself


def test_a_forced_call_through_real_llama_cpp(oai: Any) -> None:
    """tool_choice makes the grammar write one call object, whatever the model wanted."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"unit": {"enum": ["C", "F"]}},
                    "required": ["unit"],
                    "additionalProperties": False,
                },
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = oai.chat.completions.create(
        model="tiny", messages=ASK, tools=tools, tool_choice=choice, max_tokens=80, seed=1
    )
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments)["unit"] in ("C", "F")
    none = oai.chat.completions.create(
        model="echo:1", messages=ASK, tools=tools, tool_choice="none"
    )
    assert not none.choices[0].message.tool_calls
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        oai.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
