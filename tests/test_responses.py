"""OpenAI's Responses API (``/v1/responses``) through the official ``openai`` SDK, against a
real server: whole and streamed answers with the event sequence ``responses.stream()``
checks, reasoning and function-call items, stored responses continued through
``previous_response_id``, retrieval, deletion, per-key isolation, expiry and the size bound.
Null models answer the fast tests; smollm2:135m (the slow tier) real text and a JSON schema.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

import ferrousforge as ff
from ferrousforge.api.response_store import ResponseStore
from ferrousforge.api.responses_output import Output
from ferrousforge.backends.null import NullMold
from ferrousforge.schema import ChatRequest, Chunk, GenerateRequest, ModelMetadata, Stats
from ferrousforge.schema import ToolCallDelta as Delta
from ferrousforge.store.store import Store

from .apiserver import Running, running
from .nullmodels import add_null_model

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def add_thinker(home: Path) -> None:
    """A null model whose template marks thinking, so its reply's <think> part splits off."""
    manifest = add_null_model(home, "thinker:1", {"reply": "<think> pondering hard </think> Yes."})
    manifest.metadata = ModelMetadata(
        name="thinker:1", chat_template="{{ '<think>' }}", extra=manifest.metadata.extra
    )
    Store(home).save(manifest)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "echo:1", {})
    add_null_model(home, "words:1", {"reply": "one two three four"})
    add_null_model(home, "caller:1", {"reply": f"Checking. {CALL}"})
    add_null_model(home, "broken:1", {"reply": "one two three four", "fail_after": 2})
    add_thinker(home)
    with running(ff.Settings(home=home)) as srv:
        yield srv


def sdk(url: str, key: str = "unused") -> Any:  # Any: the tests check values, not SDK types
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


@pytest.fixture
def client(server: Running) -> Iterator[Any]:
    with sdk(server.url) as c:
        yield c


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[ChatRequest]:
    """The chat requests null models answer, as the engine handed them over."""
    requests: list[ChatRequest] = []
    original = NullMold.infer_stream

    def recording(self: NullMold, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        if isinstance(req, ChatRequest):
            requests.append(req.model_copy(deep=True))
        return original(self, req)

    monkeypatch.setattr(NullMold, "infer_stream", recording)
    return requests


def roles(req: ChatRequest) -> list[tuple[str, str]]:
    return [(m.role, m.content.strip()) for m in req.messages]


# --- whole answers and streams ------------------------------------------------------------


def test_create_from_text_and_items(client: Any, seen: list[ChatRequest]) -> None:
    r = client.responses.create(model="echo:1", input="hello there", instructions="Be brief.")
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text == "hello there " and r.instructions == "Be brief."
    [message] = r.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.id.startswith("msg_")
    assert r.usage.input_tokens == 2 and r.usage.output_tokens == 2 and r.usage.total_tokens == 4
    assert roles(seen[-1]) == [("system", "Be brief."), ("user", "hello there")]

    items = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": "salut"},
        {"role": "user", "content": [{"type": "input_text", "text": "and bye"}]},
    ]
    r = client.responses.create(model="echo:1", input=items, temperature=0.5, top_p=0.9)
    assert r.output_text == "and bye " and r.temperature == 0.5 and r.top_p == 0.9
    assert roles(seen[-1]) == [
        ("system", "Answer in French."),
        ("user", "hi"),
        ("assistant", "salut"),
        ("user", "and bye"),
    ]
    assert seen[-1].options.temperature == 0.5 and seen[-1].options.top_p == 0.9


def test_stream_events_and_final_response(client: Any) -> None:
    with client.responses.stream(model="words:1", input="count") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    item_id = events[2].item.id
    parts = events[2:-1]
    assert all(e.output_index == 0 for e in parts)
    assert all(e.item_id == item_id for e in parts if hasattr(e, "item_id"))
    assert all(e.content_index == 0 for e in parts if hasattr(e, "content_index"))
    assert events[-4].text == "".join(e.delta for e in events if hasattr(e, "delta"))
    assert final.status == "completed" and final.output_text == "one two three four "
    assert final.usage.output_tokens == 4
    assert client.responses.retrieve(final.id).output_text == final.output_text  # stored


def test_stream_names_each_event(server: Running) -> None:
    """Each event goes as ``event: <type>`` then its data, as OpenAI sends them."""
    body = {"model": "words:1", "input": "count", "stream": True, "store": False}
    with httpx.stream("POST", server.url + "/v1/responses", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [d["type"] for d in datas] and names[-1] == "response.completed"
    assert len(lines) == 2 * len(names)  # no [DONE]: the Responses API sends none


def test_cut_by_max_output_tokens_is_incomplete(client: Any) -> None:
    r = client.responses.create(model="words:1", input="count", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "one two " and r.output[0].status == "incomplete"
    assert r.max_output_tokens == 2 and r.usage.output_tokens == 2
    events = list(
        client.responses.create(model="words:1", input="count", max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-2].type == "response.output_item.done" and events[-2].item.status == "incomplete"


def test_reasoning_items(client: Any) -> None:
    r = client.responses.create(model="thinker:1", input="Well?")
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.content[0].type == "reasoning_text"
    assert reasoning.content[0].text.strip() == "pondering hard"
    assert message.type == "message" and r.output_text.strip() == "Yes."
    with client.responses.stream(model="thinker:1", input="Well?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thinking.strip() == "pondering hard"
    added = [e for e in events if e.type == "response.content_part.added"]
    assert [(e.output_index, e.part.type) for e in added] == [
        (0, "reasoning_text"),
        (1, "output_text"),
    ]
    assert [o.type for o in final.output] == ["reasoning", "message"]


def test_error_after_the_stream_began(client: Any) -> None:
    stream = client.responses.create(model="broken:1", input="go", stream=True)
    with pytest.raises(openai.APIError, match="failed after 2 tokens"):
        list(stream)


# --- function calls -------------------------------------------------------------------------


def test_function_call_round_trip(client: Any, seen: list[ChatRequest]) -> None:
    r = client.responses.create(model="caller:1", input="Weather in Paris?", tools=TOOLS)
    message, call = r.output
    assert message.type == "message" and r.output_text == "Checking."
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    fn = {k: v for k, v in TOOLS[0].items() if k != "type"}
    assert seen[-1].tools == [{"type": "function", "function": fn}]  # in the chat shape
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24°C"}]
    again = client.responses.create(
        model="caller:1", input=answer, previous_response_id=r.id, tools=TOOLS
    )
    assert again.status == "completed" and again.previous_response_id == r.id
    user, assistant, tool = seen[-1].messages
    assert (user.role, user.content) == ("user", "Weather in Paris?")
    assert assistant.role == "assistant" and assistant.content == "Checking."
    assert assistant.tool_calls == [
        {"id": call.call_id, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert (tool.role, tool.content) == ("tool", "sunny, 24°C")
    assert tool.tool_name == "get_weather" and tool.tool_call_id == call.call_id


def test_function_call_streams(client: Any) -> None:
    with client.responses.stream(model="caller:1", input="Weather?", tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    at = kinds.index("response.function_call_arguments.done")
    assert kinds[at + 1] == "response.output_item.done" and events[at].output_index == 1
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert json.loads("".join(deltas)) == {"city": "Paris"} == json.loads(events[at].arguments)
    call = final.output[1]
    assert call.type == "function_call" and call.status == "completed"
    assert call.arguments == events[at].arguments and call.name == "get_weather"


def test_tool_choice(client: Any, seen: list[ChatRequest]) -> None:
    plain = client.responses.create(model="caller:1", input="Hi", tools=TOOLS, tool_choice="none")
    assert [o.type for o in plain.output] == ["message"] and "<tool_call>" in plain.output_text
    assert plain.tool_choice == "none" and seen[-1].tools is None  # "none" hides the tools
    named = {"type": "function", "name": "get_weather"}
    forced = client.responses.create(model="caller:1", input="Hi", tools=TOOLS, tool_choice=named)
    assert forced.tool_choice.name == "get_weather" and seen[-1].format is not None  # a grammar
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.responses.create(
            model="caller:1", input="Hi", tools=TOOLS, tool_choice={**named, "name": "other"}
        )


# --- stored responses -----------------------------------------------------------------------


def test_previous_response_id_continues(client: Any, seen: list[ChatRequest]) -> None:
    first = client.responses.create(model="echo:1", input="My name is Ada.", instructions="Hi!")
    second = client.responses.create(
        model="echo:1", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.instructions is None
    # the first turn, and its answer, then the new input; instructions are not carried over
    assert roles(seen[-1]) == [
        ("user", "My name is Ada."),
        ("assistant", "My name is Ada."),
        ("user", "What is my name?"),
    ]
    third = client.responses.create(
        model="thinker:1", input="Sure?", previous_response_id=second.id
    )
    fourth = client.responses.create(model="echo:1", input="Well?", previous_response_id=third.id)
    assert fourth.status == "completed"
    assert roles(seen[-1])[-3:] == [("user", "Sure?"), ("assistant", "Yes."), ("user", "Well?")]
    assert seen[-1].messages[-2].thinking is not None  # the reasoning item, given back
    assert seen[-1].messages[-2].thinking.strip() == "pondering hard"
    listed = client.responses.input_items.list(fourth.id, order="asc")
    assert [i.type for i in listed.data][:2] == ["message", "message"]
    assert len(listed.data) == 8  # 4 user messages, 3 answers and one reasoning item


def test_retrieve_delete_and_not_found(client: Any, server: Running) -> None:
    r = client.responses.create(model="words:1", input="count", metadata={"topic": "numbers"})
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump() and got.metadata == {"topic": "numbers"}
    client.responses.delete(r.id)
    for attempt in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            attempt(r.id)
        assert caught.value.status_code == 404
        body: Any = caught.value.body
        assert body["type"] == "invalid_request_error" and r.id in body["message"]
    with pytest.raises(openai.NotFoundError, match="previous response"):
        client.responses.create(model="echo:1", input="hi", previous_response_id=r.id)
    gone = httpx.get(f"{server.url}/v1/responses/resp_nothing")
    assert gone.status_code == 404 and set(gone.json()["error"]) >= {"message", "type", "code"}


def test_store_false_is_not_kept(client: Any) -> None:
    r = client.responses.create(model="echo:1", input="secret", store=False)
    assert r.store is False and r.output_text == "secret "
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with client.responses.stream(model="echo:1", input="secret", store=False) as stream:
        final = stream.get_final_response()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(final.id)


def test_requests_refused_in_openai_shape(server: Running) -> None:
    url = server.url + "/v1/responses"
    loose = {"model": "echo:1", "input": "hi", "temperature": None, "something_new": {"x": 1}}
    assert httpx.post(url, json=loose).json()["status"] == "completed"  # nulls, unknown fields
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"model": "echo:1", "input": [{"role": "user", "content": [image]}]}, "input_image"),
        ({"model": "echo:1", "input": "hi", "tools": [{"type": "web_search"}]}, "web_search"),
        ({"model": "echo:1", "input": "hi", "background": True}, "background"),
        ({"model": "echo:1", "input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
        ({"model": "echo:1"}, "input is empty"),
        ({"model": "echo:1", "input": "hi", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"model": "echo:1", "input": "x" * 100, "text": {"format": {"type": "json_schema"}}}, ""),
    ]
    for body, says in bad:
        r = httpx.post(url, json=body)
        assert r.status_code == 400, body
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and says in error["message"]
    missing = httpx.post(url, json={"model": "nope:1", "input": "hi"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]


# --- owners, expiry and the bound ------------------------------------------------------------


def test_each_key_sees_only_its_own(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {})
    settings = ff.Settings(home=tmp_path, api_keys=["key-a", "key-b"])
    with running(settings) as srv, sdk(srv.url, "key-a") as a, sdk(srv.url, "key-b") as b:
        mine = a.responses.create(model="echo:1", input="mine")
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model="echo:1", input="hi", previous_response_id=mine.id)
        assert a.responses.retrieve(mine.id).output_text == "mine "  # still there
        with sdk(srv.url, "key-c") as stranger, pytest.raises(openai.AuthenticationError):
            stranger.responses.retrieve(mine.id)


def test_expiry_and_bound_over_http(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {})
    settings = ff.Settings(home=tmp_path, responses_max=2, responses_ttl="1s")
    with running(settings) as srv, sdk(srv.url) as client:
        ids = [client.responses.create(model="echo:1", input=f"n{i}").id for i in range(3)]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(ids[0])  # the oldest went for the third
        assert client.responses.retrieve(ids[2]).output_text == "n2 "
        time.sleep(1.05)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(ids[2])


def test_store_expiry_count_bytes_and_owners(tmp_path: Path) -> None:
    now = [1000.0]
    store = ResponseStore(
        tmp_path / "r.sqlite", ttl=60, max_count=3, max_bytes=2000, clock=lambda: now[0]
    )

    def put(rid: str, owner: str = "a", size: int = 10) -> None:
        store.put(owner, {"id": rid, "output": [], "pad": "x" * size}, [{"type": "message"}])

    put("r1")
    assert store.get("a", "r1") is not None and store.get("b", "r1") is None
    assert not store.delete("b", "r1") and store.get("a", "r1") is not None
    now[0] += 61
    assert store.get("a", "r1") is None  # expired
    put("r2")
    assert store.count() == 1  # the write swept the expired one
    put("r3", owner="b")
    put("r4")
    put("r5")
    assert [store.get(o, r) is not None for o, r in [("a", "r2"), ("b", "r3"), ("a", "r5")]] == [
        False,
        True,
        True,
    ]
    put("big", size=1900)  # with it, the newest 2000 bytes hold only itself
    assert store.count() == 1 and store.get("a", "big") is not None
    put("huge", size=5000)  # larger than the bound: not kept, and nothing goes for it
    assert store.count() == 1 and store.get("a", "huge") is None
    store.close()


def test_output_of_cut_and_nameless_calls() -> None:
    out = Output()
    whole = {"function": {"name": "f", "arguments": {"x": 1}}}
    events = out.feed(Chunk(call=Delta(0, call=whole)))  # the whole call, unannounced
    assert [e["type"] for e in events] == [
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert json.loads(events[-1]["item"]["arguments"]) == {"x": 1}
    out.feed(Chunk(call=Delta(1, "g")))
    out.feed(Chunk(call=Delta(1, arguments='{"y": ')))
    events = out.feed(Chunk(done=True, done_reason="length", stats=Stats(eval_count=3)))
    assert events[-1]["item"]["status"] == "incomplete" and out.status == "incomplete"
    assert [i["type"] for i in out.items] == ["function_call", "function_call"]
    assert out.items[1]["arguments"] == '{"y": '


# --- the slow tier: smollm2:135m ------------------------------------------------------------

SMOLLM = "smollm2:135m"


class City(BaseModel):
    city: str
    population: int


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/smollm2/135m.json").is_file():
        pytest.skip(f"{SMOLLM} is not in {home}; ./dev.sh test pulls it first")
    # a home of its own (for the stored responses), naming the cached model's file
    own = tmp_path_factory.mktemp("smol-home")
    manifest = Store(home).get(SMOLLM)
    Store(own).save(manifest.model_copy(update={"managed": False}))
    with running(ff.Settings(home=own, num_ctx=2048)) as srv, sdk(srv.url) as client:
        yield client


@pytest.mark.slow
def test_smollm2_answers_streams_and_remembers(smol: Any) -> None:
    ask = "What is the capital of France? Answer in one word."
    first = smol.responses.create(
        model=SMOLLM, input=ask, temperature=0, max_output_tokens=24, store=True
    )
    assert "Paris" in first.output_text and first.usage.input_tokens > 10
    with smol.responses.stream(
        model=SMOLLM, input=ask, temperature=0, max_output_tokens=24, store=False
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == first.output_text  # greedy: the same answer, streamed
    second = smol.responses.create(
        model=SMOLLM,
        input="And of Italy?",
        previous_response_id=first.id,
        temperature=0,
        max_output_tokens=24,
    )
    # the second prompt held the first turn: its question, and the answer
    grown = first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens > grown and "Rome" in second.output_text
    smol.responses.delete(first.id)
    smol.responses.delete(second.id)


@pytest.mark.slow
def test_smollm2_json_schema_and_tool_results(smol: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    r = smol.responses.create(
        model=SMOLLM,
        input="Name a large city and its population as JSON.",
        text={"format": fmt},
        temperature=0,
        max_output_tokens=64,
        store=False,
    )
    assert r.status == "completed" and r.text.format.type == "json_schema"
    answer = json.loads(r.output_text)  # the grammar held it to the schema
    assert set(answer) == {"city", "population"} and isinstance(answer["city"], str)
    assert isinstance(answer["population"], int) and not isinstance(answer["population"], bool)
    with smol.responses.stream(
        model=SMOLLM,
        input="Name a large city and its population as JSON.",
        text_format=City,  # the SDK's own: a pydantic model as the schema, parsed back
        temperature=0,
        max_output_tokens=64,
        store=False,
    ) as stream:
        parsed = stream.get_final_response().output_parsed
    assert isinstance(parsed, City) and parsed.city and parsed.population >= 0
    # a function call and its output, rendered through the model's real template
    items = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 24 degrees"},
    ]
    r = smol.responses.create(
        model=SMOLLM, input=items, tools=TOOLS, temperature=0, max_output_tokens=32, store=False
    )
    assert r.status in ("completed", "incomplete") and r.usage.input_tokens > 20
