"""A model's reply, split while it streams: thinking, answer text and tool calls.

A chat template teaches its model a markup: a reasoning section (``<think>`` … ``</think>``
or the template's own markers) and one of the common tool-call forms:

- Hermes/Qwen: ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``;
- Llama 3: the JSON object alone, ``{"name": …, "parameters": {…}}``, or after
  ``<|python_tag|>``, several joined by ``;``;
- Mistral: ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]``, or in newer templates
  ``[TOOL_CALLS]name[ARGS]{…}``.

``reply_format`` reads which from the template. ``ReplyParser`` turns text as it arrives
into chunks of answer text, thinking and tool-call pieces, holding back only what could
still be the start of a marker, so a call's arguments stream as the model writes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from .schema import Chunk, ToolCallDelta

Dialect = Literal["hermes", "llama3", "mistral"]

_THINK_MARKERS = (
    ("<think>", "</think>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("[THINK]", "[/THINK]"),
    ("<seed:think>", "</seed:think>"),
)
_OPENERS: dict[Dialect, tuple[str, ...]] = {
    "hermes": ("<tool_call>",),
    "llama3": ("<|python_tag|>",),
    "mistral": ("[TOOL_CALLS]",),
}
_HERMES_END = "</tool_call>"
# a call object whose name comes first: its arguments can stream before the object ends
_NAME_FIRST = re.compile(
    r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)
_MISTRAL_NAME = re.compile(r"([A-Za-z_][\w.\-]*)\s*\[ARGS\]\s*$")


@dataclass(frozen=True, slots=True)
class ReplyFormat:
    """The markup a chat template teaches: its thinking markers, whether the generation
    prompt already opens the thinking section, and its tool-call dialect."""

    think: tuple[str, str] | None = None
    thinks_first: bool = False
    calls: Dialect = "hermes"


def reply_format(template: str | None) -> ReplyFormat:
    """What ``template`` (a Jinja chat template) makes its model write."""
    text = template or ""
    think = next((m for m in _THINK_MARKERS if m[0] in text), None)
    calls: Dialect = "hermes"
    if "[TOOL_CALLS]" in text:
        calls = "mistral"
    elif "<tool_call>" not in text and (
        "<|python_tag|>" in text or ("<|start_header_id|>" in text and "tools" in text)
    ):
        calls = "llama3"
    first = False
    if think is not None:  # DeepSeek-R1 style: the prompt ends inside the section
        at = text.rfind("add_generation_prompt")
        tail = text[at:] if at >= 0 else ""
        first = think[0] in tail and think[1] not in tail
    return ReplyFormat(think, first, calls)


class _JsonEnd:
    """Finds where one JSON value ends in text fed piece by piece (strings and nesting
    understood; the text must start at the value)."""

    def __init__(self) -> None:
        self.depth, self.in_string, self.escaped = 0, False, False

    def feed(self, text: str) -> int | None:
        """The index in ``text`` just past the value's end, or None while it goes on."""
        for i, ch in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return i + 1
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return i + 1
        return None


class _Call:
    """One call object being read: its name once known, then its arguments streamed as
    they arrive (when they are a JSON object; a string is sent whole at the end)."""

    def __init__(self, index: int, name: str | None = None) -> None:
        self.index, self.raw, self.end = index, "", _JsonEnd()
        self.args_only = name is not None  # Mistral's ``name[ARGS]{…}``: the object is args
        self.name = name
        self.args_at = 0 if self.args_only else -1  # where the arguments start in raw
        self.args_end = _JsonEnd()
        self.streaming = self.args_done = False
        self.sent = 0  # how far into raw the arguments were sent

    def feed(self, text: str) -> tuple[list[Chunk], str | None]:
        """Chunks for ``text``, and the text after the object once it has ended."""
        stop = self.end.feed(text)
        self.raw += text if stop is None else text[:stop]
        out: list[Chunk] = []
        if self.name is None and (m := _NAME_FIRST.match(self.raw)):
            self.name, self.args_at = json.loads(f'"{m.group(1)}"'), m.end()
        if not self.streaming and 0 <= self.args_at < len(self.raw):
            if self.raw[self.args_at] in "{[":
                self.streaming, self.sent = True, self.args_at
                out.append(Chunk(call=ToolCallDelta(self.index, self.name or "")))
            else:
                self.args_at = -2  # not an object: sent whole when the call ends
        if self.streaming and not self.args_done:
            piece = self.raw[self.sent :]
            done = self.args_end.feed(piece)
            if done is not None:
                piece, self.args_done = piece[:done], True
            if piece:
                out.append(Chunk(call=ToolCallDelta(self.index, arguments=piece)))
            self.sent += len(piece)
        return out, None if stop is None else text[stop:]

    def finish(self) -> tuple[list[Chunk], dict[str, Any] | None]:
        """The call's last chunks and the call in Ollama's shape; None when the object was
        no call and nothing of it was sent (its text is answer text after all)."""
        value: Any = _loads(self.raw)
        if self.args_only:
            name, args = self.name, value
        elif isinstance(value, dict) and isinstance(value.get("name"), str):
            name, args = value["name"], value.get("arguments", value.get("parameters"))
        else:
            name, args = self.name, None
            if self.streaming:  # the object is cut short: keep what the arguments hold
                args = _loads(self.raw[self.args_at : self.sent])
        if isinstance(args, str):
            args = _loads(args)
        if not self.streaming and (name is None or value is None):
            return [], None
        args = args if isinstance(args, dict) else {}
        out = []
        if not self.streaming:
            out.append(Chunk(call=ToolCallDelta(self.index, name or "")))
            arguments = json.dumps(args, ensure_ascii=False)
            out.append(Chunk(call=ToolCallDelta(self.index, arguments=arguments)))
        call = {"function": {"name": name, "arguments": args}}
        out.append(Chunk(call=ToolCallDelta(self.index, call=call)))
        return out, call


class ReplyParser:
    """Splits a reply as it streams. ``feed`` takes each new piece of text and returns
    chunks whose ``text`` is answer text, ``thinking`` reasoning, and ``call`` a tool-call
    piece; ``close`` returns what was held back. ``calls`` lists the finished calls.

    Tool calls are read only when ``tools`` is true (a model may write the markup for
    other reasons); ``forced`` says the whole reply is one call object (a grammar made
    it so). With ``think`` false, thinking is dropped.
    """

    def __init__(
        self, fmt: ReplyFormat, *, tools: bool, think: bool | None = None, forced: bool = False
    ) -> None:
        self.fmt, self.tools, self.keep_thinking = fmt, tools, think is not False
        self.calls: list[dict[str, Any]] = []
        self._buf = ""
        self._state = "think" if fmt.think and fmt.thinks_first else "text"
        self._call: _Call | None = None
        self._opener = ""  # the marker that opened this call section ("" for a bare call)
        self._section = ""  # its text since then, given back if it holds no call
        self._bare_ok = tools and (forced or fmt.calls == "llama3")  # one bare JSON call
        self._trim = True  # strip the whitespace that starts text and thinking

    def feed(self, text: str) -> list[Chunk]:
        self._buf += text
        return self._run(final=False)

    def close(self) -> list[Chunk]:
        out = self._run(final=True)
        if self._call is not None:
            out += self._call.feed("")[0] + self._end_call()
        if self._state == "calls" and (self._section.strip() or self._buf.strip()):
            out += self._leave_calls()
        return out

    def _run(self, final: bool) -> list[Chunk]:
        out: list[Chunk] = []
        while self._buf:
            before = (self._state, self._buf, self._call)
            out += getattr(self, f"_in_{self._state}")(final)
            if (self._state, self._buf, self._call) == before:
                break  # waiting for more text
        return out

    # -- states --------------------------------------------------------------------

    def _markers(self) -> list[str]:
        found = [self.fmt.think[0]] if self.fmt.think else []
        return found + list(_OPENERS[self.fmt.calls] if self.tools else ())

    def _in_text(self, final: bool) -> list[Chunk]:
        if self._bare_ok:
            lead = self._buf.lstrip()
            if not lead and not final:
                return []  # only whitespace yet: a bare JSON call may follow
            self._bare_ok = False
            if lead.startswith("{"):
                self._buf, self._state, self._opener, self._section = lead, "calls", "", ""
                return []
        at, marker = _earliest(self._buf, self._markers())
        if marker is None:
            keep = 0 if final else _partial(self._buf, self._markers())
            cut = len(self._buf) - keep
            text, self._buf = self._buf[:cut], self._buf[cut:]
            return self._text(text)
        out = self._text(self._buf[:at])
        self._buf = self._buf[at + len(marker) :]
        if self.fmt.think and marker == self.fmt.think[0]:
            self._state, self._trim = "think", True
        else:
            self._state, self._opener, self._section = "calls", marker, marker
        return out

    def _in_think(self, final: bool) -> list[Chunk]:
        assert self.fmt.think is not None
        end = self.fmt.think[1]
        at = self._buf.find(end)
        if at < 0:
            keep = 0 if final else _partial(self._buf, [end])
            cut = len(self._buf) - keep
            text, self._buf = self._buf[:cut], self._buf[cut:]
            return self._thinking(text)
        out = self._thinking(self._buf[:at])
        self._buf, self._state, self._trim = self._buf[at + len(end) :], "text", True
        return out

    def _in_calls(self, final: bool) -> list[Chunk]:
        """A call section: call objects, and between them separators (``,;[]``, space),
        Mistral's ``name[ARGS]``, or the end of a Hermes block."""
        if self._call is not None:
            out, rest = self._call.feed(self._buf)
            self._buf = ""
            if rest is None:
                return out
            self._buf = rest
            return out + self._end_call()
        hermes = self._opener == "<tool_call>"
        brace, end = self._buf.find("{"), self._buf.find(_HERMES_END) if hermes else -1
        if end >= 0 and (brace < 0 or end < brace):  # a Hermes block ends
            text = self._section + self._buf[: end + len(_HERMES_END)]
            self._buf = self._buf[end + len(_HERMES_END) :]
            return self._leave_calls(text)
        between = self._buf if brace < 0 else self._buf[:brace]
        name = _MISTRAL_NAME.search(between)
        if brace < 0:
            if final or (not hermes and self._opener != "[TOOL_CALLS]" and _junk(between)):
                return self._leave_calls()
            return []
        if _junk(between) and name is None and not hermes:
            return self._leave_calls()
        self._section += between
        self._call = _Call(len(self.calls), name.group(1) if name else None)
        self._buf = self._buf[brace:]
        return []

    def _leave_calls(self, text: str | None = None) -> list[Chunk]:
        """The section ends (with ``text``; by default all that is left): what it held
        that was no call is answer text. Space after calls is not."""
        if text is None:
            text, self._buf = self._section + self._buf, ""
        self._section, self._state, self._trim = "", "text", bool(self.calls)
        return self._text(text) if _junk(text) else []

    def _end_call(self) -> list[Chunk]:
        assert self._call is not None
        call, self._call = self._call, None
        out, found = call.finish()
        if found is not None:
            self.calls.append(found)
            self._section = ""
            return out
        self._section += call.raw  # no call: it goes back into the text with its section
        if self._opener != "<tool_call>":
            return self._leave_calls()
        return []

    # -- output --------------------------------------------------------------------

    def _text(self, text: str) -> list[Chunk]:
        if self._trim:
            text = text.lstrip()
            self._trim = not text
        return [Chunk(text)] if text else []

    def _thinking(self, text: str) -> list[Chunk]:
        if self._trim:
            text = text.lstrip()
            self._trim = not text
        return [Chunk(thinking=text)] if text and self.keep_thinking else []


def _earliest(text: str, markers: list[str]) -> tuple[int, str | None]:
    found = [(text.find(m), m) for m in markers if m in text]
    return min(found) if found else (-1, None)


def _partial(text: str, markers: list[str]) -> int:
    """How many characters at the end of ``text`` could begin one of ``markers``."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


def _junk(text: str) -> bool:
    """Text in a call section that is more than separators and markers."""
    for marker in ("[TOOL_CALLS]", "<|python_tag|>", "<tool_call>", _HERMES_END):
        text = text.replace(marker, "")
    return bool(text.strip(" \t\r\n,;[]")) and _MISTRAL_NAME.search(text) is None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def split_reply(
    text: str, fmt: ReplyFormat | None = None, *, tools: bool = True
) -> tuple[str, str, list[dict[str, Any]]]:
    """A whole reply's answer text, thinking and tool calls (Ollama's shape)."""
    parser = ReplyParser(fmt or ReplyFormat(), tools=tools)
    chunks = parser.feed(text) + parser.close()
    answer = "".join(c.text for c in chunks)
    return answer, "".join(c.thinking for c in chunks), parser.calls


def extract_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The answer without its Hermes tool-call blocks, and the calls in Ollama's shape.
    A block that is not a JSON object with a ``name`` stays in the text, untouched."""
    answer, _, calls = split_reply(text)
    return (answer.strip() if calls else text), calls
