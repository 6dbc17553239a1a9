"""The body of ``POST /v1/responses`` and the chat messages its items become: a
``message`` item a chat message, ``function_call`` items the assistant's tool calls,
``function_call_output`` items tool results, ``reasoning`` items its thinking. Every field
has a limit; nulls and unknown fields are accepted, as OpenAI's API accepts them."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import RequestError
from ..schema import Body, ChatRequest, Format, InferenceOptions, Message
from .common import named_results
from .openai import call_in
from .responses_output import Output, item_id, usage

TEXT = 1 << 23  # characters in one text: more than a body under max_body_bytes holds
ID, NAME, KIND = 256, 256, 64
Text = Annotated[str, Field(max_length=TEXT)]


class Part(Body):
    """A content part. Only text is read: ``input_text``, ``output_text``, ``refusal``,
    ``summary_text``, ``reasoning_text``."""

    type: str = Field("input_text", max_length=KIND)
    text: Text = ""
    refusal: Text = ""


Parts = Annotated[list[Part], Field(max_length=1024)]
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


class Item(Body):
    """One input item: a ``message`` (the default), ``function_call``,
    ``function_call_output`` or ``reasoning``. Fields its type does not use are ignored."""

    type: str = Field("message", max_length=KIND)
    id: str | None = Field(None, max_length=ID)
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Text | Parts = ""
    call_id: str | None = Field(None, max_length=ID)
    name: str | None = Field(None, max_length=NAME)
    arguments: Text = ""
    output: Text | Parts = ""
    summary: Parts = Field(default_factory=list)

    def canonical(self) -> dict[str, Any]:
        """The item as it is stored and listed: ids given, content as text parts."""
        if self.type == "message":
            if self.role is None:
                raise RequestError("input: a message needs a role")
            kind = "output_text" if self.role == "assistant" else "input_text"
            part: dict[str, Any] = {"type": kind, "text": ""}
            if kind == "output_text":
                part["annotations"] = []
            parts = [part | {"text": t} for t in _texts(self.content, "content")]
            return _ided("msg", self.id) | {
                "type": "message",
                "role": self.role,
                "content": parts,
                "status": "completed",
            }
        if self.type == "function_call":
            if not self.name or not self.call_id:
                raise RequestError("input: a function_call needs a name and a call_id")
            return _ided("fc", self.id) | {
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.arguments or "{}",
                "status": "completed",
            }
        if self.type == "function_call_output":
            return _ided("fco", self.id) | {
                "type": "function_call_output",
                "call_id": self.call_id or "",
                "output": "".join(_texts(self.output, "output")),
                "status": "completed",
            }
        if self.type == "reasoning":
            content = self.content if isinstance(self.content, list) else []
            return _ided("rs", self.id) | {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": t} for t in _texts(self.summary)],
                "content": [{"type": "reasoning_text", "text": t} for t in _texts(content)],
            }
        raise RequestError(
            f"input: items of type {self.type!r} are not supported; send message, "
            "function_call, function_call_output or reasoning items"
        )


def _texts(value: str | list[Part], where: str = "content") -> list[str]:
    if isinstance(value, str):
        return [value]
    for p in value:
        if p.type not in _TEXT_PARTS and p.type != "refusal":
            raise RequestError(f"input: only text {where} is supported, not {p.type!r}")
    return [p.refusal if p.type == "refusal" else p.text for p in value]


def _ided(prefix: str, given: str | None) -> dict[str, Any]:
    return {"id": given or item_id(prefix)}


class Tool(Body):
    type: str = Field("function", max_length=KIND)
    name: str = Field("", max_length=NAME)
    description: str | None = Field(None, max_length=TEXT)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def chat(self) -> dict[str, Any]:
        """The tool in the chat shape templates read."""
        if self.type != "function":
            raise RequestError(f"tools: only function tools are supported, not {self.type!r}")
        if not self.name:
            raise RequestError("tools: a function tool needs a name")
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters or {}}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


class NamedTool(Body):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=NAME)


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=NAME)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = Field(None, max_length=TEXT)
    strict: bool | None = None

    def format(self) -> Format:
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            if not isinstance(self.schema_, dict):
                raise RequestError("text.format.schema must be a JSON schema")
            return self.schema_
        return None


class TextConfig(Body):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: str | None = Field(None, max_length=KIND)


class Reasoning(Body):
    effort: str | None = Field(None, max_length=KIND)
    summary: str | None = Field(None, max_length=KIND)


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ResponsesBody(Body):
    """A request to ``POST /v1/responses``: what the server reads of OpenAI's fields (others
    are ignored; ``background`` and ``conversation`` are refused)."""

    model: str = Field(min_length=1, max_length=500)
    input: Text | Annotated[list[Item], Field(max_length=10_000)] = ""
    instructions: Text | None = None
    previous_response_id: str | None = Field(None, max_length=ID)
    store: bool = True
    stream: bool = False
    background: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: TextConfig = Field(default_factory=TextConfig)
    tools: Annotated[list[Tool], Field(max_length=256)] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | NamedTool = "auto"
    parallel_tool_calls: bool = True
    reasoning: Reasoning = Field(default_factory=Reasoning)
    metadata: Metadata = Field(default_factory=dict)
    user: str | None = Field(None, max_length=NAME)
    truncation: str | None = Field(None, max_length=KIND)
    conversation: str | dict[str, Any] | None = None

    def items(self) -> list[dict[str, Any]]:
        """This request's input, as stored items."""
        if self.background or self.conversation is not None:
            raise RequestError("background responses and conversations are not supported")
        if isinstance(self.input, str):
            return [Item(role="user", content=self.input).canonical()] if self.input else []
        return [item.canonical() for item in self.input]

    def request(self, conversation: list[dict[str, Any]]) -> ChatRequest:
        """The chat turn: ``instructions`` as the system message, then the conversation."""
        messages = [Message(role="system", content=self.instructions)] if self.instructions else []
        messages += messages_of(conversation)
        if not messages:
            raise RequestError("input is empty")
        choice = self.tool_choice
        return ChatRequest(
            messages=messages,
            tools=[t.chat() for t in self.tools] or None,
            tool_choice=choice.name if isinstance(choice, NamedTool) else choice,
            format=self.text.format.format(),
            think=False if self.reasoning.effort == "none" else None,
            options=InferenceOptions(
                temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_output_tokens
            ),
        )

    def response(self, rid: str, created: int, output: Output | None = None) -> dict[str, Any]:
        """The response object: in progress, or finished with ``output`` (fed its end)."""
        status, items, used = "in_progress", [], None
        if output is not None and output.last is not None:
            status, items, used = output.status, output.items, usage(output.last)
        cut, choice = status == "incomplete", self.tool_choice
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata,
            "model": self.model,
            "output": items,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": self.reasoning.effort, "summary": self.reasoning.summary},
            "store": self.store,
            "temperature": self.temperature,
            "text": {"format": self.text.format.model_dump(by_alias=True, exclude_none=True)},
            "tool_choice": choice.model_dump() if isinstance(choice, NamedTool) else choice,
            "tools": [t.model_dump(exclude_none=True) for t in self.tools],
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": used,
            "user": self.user,
        }


def messages_of(items: list[dict[str, Any]]) -> list[Message]:
    """Chat messages from stored items: an assistant's reasoning, text and function calls
    in a row make one assistant message, and each function call output a tool message."""
    out: list[Message] = []
    for item in items:
        kind, last = item["type"], out[-1] if out else None
        turn = last if last is not None and last.role == "assistant" else None
        if kind == "message":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])
            role = "system" if item["role"] == "developer" else item["role"]
            if role == "assistant" and turn is not None and not (turn.content or turn.tool_calls):
                turn.content = text
            else:
                out.append(Message(role=role, content=text))
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            if thinking := "".join(p["text"] for p in parts):
                out.append(Message(role="assistant", thinking=thinking))
        elif kind == "function_call":
            call = call_in({"id": item["call_id"], "function": item})
            if not isinstance(call["function"]["arguments"], dict):
                raise RequestError("input: a function_call's arguments must be a JSON object")
            if turn is not None:
                turn.tool_calls = [*(turn.tool_calls or []), call]
            else:
                out.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            out.append(Message(role="tool", content=item["output"], tool_call_id=item["call_id"]))
    return named_results(out)
