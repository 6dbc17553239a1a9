"""Tool calls in a model's answer: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
blocks, the form Hermes-style chat templates (Qwen, SmolLM, ...) teach their models."""

from __future__ import annotations

import json
import re
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def extract_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The answer without its tool-call blocks, and the calls as Ollama's ``tool_calls``.

    A block that is not a JSON object with a ``name`` stays in the text, untouched.
    """
    calls: list[dict[str, Any]] = []

    def take(m: re.Match[str]) -> str:
        try:
            call = json.loads(m.group(1))
        except ValueError:
            return m.group(0)
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return m.group(0)
        args = call.get("arguments", call.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return m.group(0)
        calls.append({"function": {"name": call["name"], "arguments": args}})
        return ""

    rest = _BLOCK.sub(take, text)
    return (rest.strip() if calls else text), calls
