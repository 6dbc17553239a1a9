"""A response's output items, built from the engine's chunks, and the stream events that
tell a client how they grow (``response.output_item.added``, the deltas, the ``….done``
events), as OpenAI's SDK checks them: each item and content part is announced before its
deltas and finished before the next begins, at the same ``output_index``.

Thinking becomes a ``reasoning`` item (its text as ``reasoning_text`` content), answer text
a ``message``, each tool call a ``function_call``. A whole answer goes through the same
code: ``chunks_of`` turns it into the chunks a stream would have had.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from ..schema import Chunk, Result, Stats, ToolCallDelta

Event = dict[str, Any]


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(last: Chunk) -> dict[str, Any]:
    s = last.stats or Stats()
    prompt, answer = s.prompt_eval_count + s.prompt_cached, s.eval_count  # a cached prefix too
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": s.prompt_cached, "cache_write_tokens": 0},
        "output_tokens": answer,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + answer,
    }


def chunks_of(r: Result) -> list[Chunk]:
    """The chunks a stream of the answer ``r`` would have had."""
    chunks = [Chunk(thinking=r.thinking)] if r.thinking else []
    chunks += [Chunk(r.text)] if r.text else []
    for i, call in enumerate(r.tool_calls or []):
        name = call["function"]["name"]
        chunks += [Chunk(call=ToolCallDelta(i, name)), Chunk(call=ToolCallDelta(i, call=call))]
    return [*chunks, Chunk(done=True, done_reason=r.done_reason, stats=r.stats)]


class Output:
    """The output items of one response. ``feed`` takes each chunk and returns the events
    it makes (without sequence numbers); ``last`` is the done chunk once it came."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.last: Chunk | None = None
        self._open: dict[str, Any] | None = None  # the item being written: items[-1]
        self._call = -1  # the tool call index the open item is (-1: not a call)
        self._text = ""  # the open item's text (or arguments) so far
        self._held = ""  # whitespace that is no message yet (it may only end the answer)

    @property
    def status(self) -> str:
        cut = self.last is not None and self.last.done_reason == "length"
        return "incomplete" if cut else "completed"

    def feed(self, c: Chunk) -> list[Event]:
        out: list[Event] = []
        if c.thinking:
            if not self._is("reasoning"):
                out += self._start({"type": "reasoning", "summary": [], "content": []})
            out.append(self._delta("response.reasoning_text.delta", c.thinking))
        if c.text:
            if self._is("message"):
                out.append(self._delta("response.output_text.delta", c.text))
            elif not (self._held + c.text).strip():
                self._held += c.text
            else:
                out += self._message(self._held + c.text)
        if c.call is not None:
            out += self._tool(c.call)
        if c.done:
            self.last = c
            out += self._close(self.status)
            if not any(i["type"] in ("message", "function_call") for i in self.items):
                out += self._message(self._held)  # an empty answer is still a message
                out += self._close(self.status)
        return out

    # -- items -------------------------------------------------------------------------

    def _is(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _start(self, item: dict[str, Any], call: int = -1) -> list[Event]:
        out = self._close()
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[item["type"]]
        item = {"id": item_id(prefix), **item, "status": "in_progress"}
        self.items.append(item)
        self._open, self._call, self._text, self._held = item, call, "", ""
        out.append(self._event("response.output_item.added", item=copy.deepcopy(item)))
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self._event("response.content_part.added", content_index=0, part=part))
        elif item["type"] == "reasoning":
            part = {"type": "reasoning_text", "text": ""}
            out.append(self._event("response.content_part.added", content_index=0, part=part))
        return out

    def _message(self, text: str) -> list[Event]:
        out = self._start({"type": "message", "role": "assistant", "content": []})
        return out + ([self._delta("response.output_text.delta", text)] if text else [])

    def _tool(self, d: ToolCallDelta) -> list[Event]:
        out: list[Event] = []
        if self._call != d.index:  # a call begins (its name comes first)
            name = d.call["function"]["name"] if d.call else d.name
            item = {"type": "function_call", "call_id": item_id("call"), "name": name}
            out += self._start(item | {"arguments": ""}, d.index)
        assert self._open is not None
        if d.arguments:
            out.append(self._event("response.function_call_arguments.delta", delta=d.arguments))
            self._text += d.arguments
        if d.call is not None:
            fn = d.call["function"]
            self._open["name"] = fn["name"] or self._open["name"]
            self._open["arguments"] = _arguments(self._text, fn["arguments"])
            out += self._close("completed")
        return out

    def _delta(self, kind: str, text: str) -> Event:
        self._text += text
        event = self._event(kind, content_index=0, delta=text)
        return event | {"logprobs": []} if kind == "response.output_text.delta" else event

    def _close(self, status: str = "completed") -> list[Event]:
        item, text = self._open, self._text
        if item is None:
            return []
        out: list[Event] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out.append(self._event("response.output_text.done", content_index=0, text=text))
            out[-1]["logprobs"] = []
            out.append(self._event("response.content_part.done", content_index=0, part=part))
            item["content"] = [part]
        elif item["type"] == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            out.append(self._event("response.reasoning_text.done", content_index=0, text=text))
            out.append(self._event("response.content_part.done", content_index=0, part=part))
            item["content"] = [part]
        else:  # a call: ended by its last piece, or cut short with what it has
            if item["status"] == "in_progress" and status == "completed" and self.last is not None:
                status = "incomplete"  # the answer ended inside the call
            item["arguments"] = item["arguments"] or text
            args = item["arguments"]
            out.append(self._event("response.function_call_arguments.done", arguments=args))
        item["status"] = status
        out.append(self._event("response.output_item.done", item=copy.deepcopy(item)))
        self._open, self._call, self._text = None, -1, ""
        return out

    def _event(self, kind: str, **fields: Any) -> Event:
        assert self._open is not None
        at = {"output_index": len(self.items) - 1}
        if kind.startswith("response.output_item."):
            return {"type": kind, **at, **fields}
        return {"type": kind, "item_id": self._open["id"], **at, **fields}


def _arguments(streamed: str, args: Any) -> str:
    """A call's arguments as JSON text: what streamed, when it says the same."""
    try:
        if streamed and json.loads(streamed) == args:
            return streamed
    except ValueError:
        pass
    return json.dumps(args, ensure_ascii=False)
