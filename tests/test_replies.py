"""Replies split while they stream: thinking, answer text and each tool-call dialect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferrousforge.replies import ReplyFormat, ReplyParser, reply_format, split_reply
from ferrousforge.schema import Chunk

QWEN = (
    "{%- if tools %}<tools>{{ tools | tojson }}</tools> <tool_call>{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}"
)
R1 = "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
LLAMA3 = "<|start_header_id|>{{ tools }}<|python_tag|><|eot_id|>"
MISTRAL = "[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]"


def pieces(text: str, step: int) -> list[str]:
    return [text[i : i + step] for i in range(0, len(text), step)]


def run(fmt: ReplyFormat, text: str, step: int, **kw: Any) -> tuple[list[Chunk], ReplyParser]:
    parser = ReplyParser(fmt, tools=kw.pop("tools", True), **kw)
    out: list[Chunk] = []
    for p in pieces(text, step):
        out += parser.feed(p)
    return out + parser.close(), parser


def summary(chunks: list[Chunk]) -> tuple[str, str, list[tuple[str, dict[str, Any]]]]:
    """Answer text, thinking, and each call as its streamed name and parsed arguments."""
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for c in chunks:
        if c.call is not None:
            if c.call.name:
                names[c.call.index] = c.call.name
            args[c.call.index] = args.get(c.call.index, "") + c.call.arguments
    calls = [(names[i], json.loads(args[i])) for i in sorted(names)]
    return "".join(c.text for c in chunks), "".join(c.thinking for c in chunks), calls


WEATHER = ("get_weather", {"city": "Paris", "days": [1, 2], "note": "a } in {text}"})
TIME = ("get_time", {"tz": "CET"})


def test_formats_come_from_templates() -> None:
    assert reply_format(QWEN) == ReplyFormat(("<think>", "</think>"), False, "hermes")
    assert reply_format(R1) == ReplyFormat(("<think>", "</think>"), True, "hermes")
    assert reply_format(LLAMA3).calls == "llama3" and reply_format(LLAMA3).think is None
    assert reply_format(MISTRAL).calls == "mistral"
    assert reply_format(None) == ReplyFormat()


CASES = {
    "hermes": (
        ReplyFormat(("<think>", "</think>")),
        "<think>\nLet me look.\n</think>\n\nChecking. "
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2], '
        '"note": "a } in {text}"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": "{\\"tz\\": \\"CET\\"}"}</tool_call>',
        ("Checking. ", "Let me look.\n", [WEATHER, TIME]),
    ),
    "llama3 bare": (
        ReplyFormat(calls="llama3"),
        ' {"name": "get_weather", "parameters": {"city": "Paris", "days": [1, 2], '
        '"note": "a } in {text}"}}',
        ("", "", [WEATHER]),
    ),
    "llama3 python_tag": (
        ReplyFormat(calls="llama3"),
        'Sure.<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", '
        '"days": [1, 2], "note": "a } in {text}"}}; {"name": "get_time", "parameters": '
        '{"tz": "CET"}}',
        ("Sure.", "", [WEATHER, TIME]),
    ),
    "mistral array": (
        ReplyFormat(calls="mistral"),
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2],'
        ' "note": "a } in {text}"}}, {"name": "get_time", "arguments": {"tz": "CET"}}]',
        ("", "", [WEATHER, TIME]),
    ),
    "mistral named": (
        ReplyFormat(calls="mistral"),
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": [1, 2], "note": "a } in {text}"}'
        '[TOOL_CALLS]get_time[ARGS]{"tz": "CET"}',
        ("", "", [WEATHER, TIME]),
    ),
    "r1 starts thinking": (
        ReplyFormat(("<think>", "</think>"), thinks_first=True),
        "Hmm, two and two.</think>\n\nFour.",
        ("Four.", "Hmm, two and two.", []),
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_dialects_split_alike_however_the_text_arrives(case: str, step: int) -> None:
    fmt, text, expected = CASES[case]
    chunks, parser = run(fmt, text, step)
    assert summary(chunks) == expected
    assert [c["function"]["name"] for c in parser.calls] == [n for n, _ in expected[2]]
    assert [c["function"]["arguments"] for c in parser.calls] == [a for _, a in expected[2]]


def test_arguments_stream_before_the_call_ends() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    parser = ReplyParser(ReplyFormat(), tools=True)
    early = parser.feed(text[: text.index("Paris") + 2])
    assert early[0].call is not None and early[0].call.name == "get_weather"
    assert "".join(c.call.arguments for c in early if c.call) == '{"city": "Pa'
    assert not parser.calls


def test_text_that_is_no_call_stays_text() -> None:
    broken = "<tool_call>{not json}</tool_call> after"
    assert split_reply(broken) == (broken, "", [])
    assert split_reply("a <tool_call> b") == ("a <tool_call> b", "", [])
    bare = '{"answer": 4}'  # a JSON reply without a name is an answer
    assert split_reply(bare, ReplyFormat(calls="llama3")) == (bare, "", [])
    code = "<|python_tag|>print(1)"
    assert split_reply(code, ReplyFormat(calls="llama3")) == ("<|python_tag|>print(1)", "", [])
    # without tools, markup is left as the model wrote it
    plain = '<tool_call>{"name": "x", "arguments": {}}</tool_call>'
    assert split_reply(plain, tools=False) == (plain, "", [])


def test_think_false_drops_thinking_and_partial_markers_wait() -> None:
    chunks, _ = run(ReplyFormat(("<think>", "</think>")), "<think>hmm</think>Four", 1, think=False)
    assert summary(chunks) == ("Four", "", [])
    parser = ReplyParser(ReplyFormat(("<think>", "</think>")), tools=False)
    assert parser.feed("2 <thi") == [Chunk("2 ")]  # "<thi" may open a section: held
    assert parser.close() == [Chunk("<thi")]
