"""``Chat``: a chat box over one model, with streaming, stop and clear.

chat = Chat("smollm2:135m")
chat                    # type, Enter (or Send); Stop cancels; Clear forgets
chat.ask("Hi!")         # or from Python: blocks, returns the Answer
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import traitlets as t

from ..interface import EngineClient
from ._common import (
    Answer,
    Busy,
    ForgeWidget,
    module,
    resolve_engine,
    start_thread,
    stream_answer,
    style,
)


class Chat(ForgeWidget):
    """A conversation with one model; the history lives here, in ``messages``."""

    _esm = module("chat.js")
    _css = style("chat.css")

    model = t.Unicode("").tag(sync=True)
    messages = t.List(t.Dict()).tag(sync=True)  # {"role", "content"}, without the system
    turn = t.Int(0).tag(sync=True)  # bumped by every ask and clear; tokens carry it
    streaming = t.Bool(False).tag(sync=True)
    last = t.Dict().tag(sync=True)  # the last answer's figures: ttft_ms, tokens, ...

    def __init__(
        self,
        model: str,
        *,
        engine: EngineClient | None = None,
        system: str | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``system`` is sent first with every request; ``options`` go to every request."""
        self.engine = resolve_engine(engine)
        self.system = system
        self.options = dict(options or {})
        self.answer: Answer | None = None  # the last one, stopped or not
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        super().__init__(model=model, **kwargs)

    # -- the Python API ------------------------------------------------------------------

    def ask(self, text: str, *, wait: bool = True) -> Answer | None:
        """Send ``text`` as the user; with ``wait``, block and return the Answer."""
        self._start(text)
        return self.wait() if wait else None

    def wait(self, timeout: float | None = None) -> Answer | None:
        """Block until the answer in progress ends; return it."""
        if not self._idle.wait(timeout):
            raise TimeoutError(f"the answer did not end within {timeout} s")
        return self.answer

    def stop(self) -> None:
        """Stop the answer in progress; what streamed so far is kept."""
        self._stop.set()

    def clear(self) -> None:
        """Stop any answer and forget the conversation."""
        self._stop.set()
        with self._sync:
            self.update(turn=self.turn + 1, messages=[], last={}, error="")

    # -- the front end --------------------------------------------------------------------

    def on_message(self, content: dict[str, Any]) -> None:
        """Send, Stop and Clear clicks; a send carries its text (DESIGN.md §6)."""
        kind = content.get("type")
        if kind == "send":
            self._start(str(content.get("text", "")))
        elif kind == "stop" and content.get("turn") == self.turn:
            self.stop()
        elif kind == "clear":
            self.clear()

    # -- one answer -----------------------------------------------------------------------

    def _start(self, text: str) -> None:
        if not text.strip():
            raise ValueError("type a message first")
        with self._lock:
            if not self._idle.is_set():
                raise Busy("an answer is still streaming; stop it or wait()")
            self._idle.clear()
        try:
            self._stop.clear()
            with self._sync:
                turn = self.turn + 1
                messages = [*self.messages, {"role": "user", "content": text}]
                self.update(turn=turn, messages=messages, streaming=True, error="")
            start_thread(self._reply, turn, messages, name="forge-chat")
        except BaseException:
            self._idle.set()
            raise

    def _reply(self, turn: int, messages: list[dict[str, str]]) -> None:
        def on_token(answer: Answer, text: str) -> None:
            msg: dict[str, Any] = {"type": "token", "turn": turn, "text": text}
            msg |= {"tokens": answer.tokens, "tps": answer.tokens_per_s}
            if answer.tokens == 1:
                msg["ttft_ms"] = answer.ttft_ms
            self.send(msg)

        history = [{"role": "system", "content": self.system}] if self.system else []
        try:
            answer = stream_answer(
                self.engine,
                self.model,
                history + messages,
                options=self.options,
                on_token=on_token,
                stop=self._stop,
            )
            self.answer = answer
            figures = {
                k: getattr(answer, k)
                for k in ("ttft_ms", "tokens", "tokens_per_s", "done_reason", "backend", "device")
            }
            with self._sync:
                changes: dict[str, Any] = {"streaming": False}
                if turn == self.turn:  # not cleared meanwhile
                    changes |= {"last": figures, "error": answer.error or ""}
                    if answer.text or answer.error is None:
                        reply = {"role": "assistant", "content": answer.text}
                        changes["messages"] = [*messages, reply]
                self.update(**changes)
            self.send({"type": "done", "turn": turn, "done_reason": answer.done_reason})
        finally:
            self.update(streaming=False)
            self._idle.set()
