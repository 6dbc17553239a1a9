"""A chat template rendered: messages (and tools) into the prompt a model was trained on.

One renderer for the llama.cpp backend, token counting and the null backend's prompt echo:
llama-cpp-python's Jinja formatter (a sandboxed Jinja environment with Transformers'
``tojson`` and tag extensions), cached per template.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from .errors import InvalidTemplate, MissingExtra
from .schema import Message


@functools.lru_cache(maxsize=32)
def _formatter(template: str, bos: str, eos: str) -> Any:
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError as e:
        raise MissingExtra("llama_cpp (to render chat templates)", "llama") from e
    try:
        return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
    except Exception as e:  # a template Jinja cannot parse
        raise InvalidTemplate(f"the chat template does not parse: {_one_line(e)}") from e


def render_chat(
    template: str,
    messages: Sequence[Message],
    tools: list[dict[str, Any]] | None = None,
    think: bool | None = None,
    *,
    bos: str = "",
    eos: str = "",
) -> str:
    """The prompt for ``messages``; ``think`` reaches the template as ``enable_thinking``,
    the switch reasoning templates read. A template that does not show ``tools`` gets
    them in a system message, with the Hermes form to call them in."""
    if tools and "tools" not in template:
        messages = told(messages, tools)
    msgs = [m.model_dump(exclude_none=True) for m in messages]
    extra = {} if think is None else {"enable_thinking": think}
    try:
        return str(_formatter(template, bos, eos)(messages=msgs, tools=tools, **extra).prompt)
    except Exception as e:  # jinja errors and the template's raise_exception
        raise InvalidTemplate(f"the chat template failed: {_one_line(e)}") from e


def told(messages: Sequence[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """``messages`` with ``tools`` described in the system message (llama-server does the
    same for templates without tools), so the model knows what it may call."""
    listed = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    text = (
        f"You may call these tools:\n{listed}\n"
        'To call one, answer with <tool_call>{"name": <its name>, "arguments": '
        "<an object of its parameters>}</tool_call>."
    )
    rest = list(messages)
    if rest and rest[0].role == "system":
        first = rest.pop(0)
        text = f"{first.content}\n\n{text}" if first.content else text
    return [Message(role="system", content=text), *rest]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
