"""What the widgets share: their engine, one-line errors, and one streamed answer.

Threads: every generation runs on a thread of its own and pushes its tokens to the
front end as it goes, so the kernel is never blocked. Messages from the front end carry
the state their action needs (DESIGN.md §6: custom messages overtake trait updates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anywidget
import traitlets as t

from ..errors import ForgeError
from ..store.names import parse_name

log = logging.getLogger(__name__)


def resolve_engine(engine: Any) -> Any:
    """``engine``, or the kernel's shared one (``ferrousforge.notebook.shared()``)."""
    if engine is not None:
        return engine
    from ..notebook import shared

    return shared()


class Busy(RuntimeError):
    """A run or an answer is still streaming."""


def one_line(e: BaseException) -> str:
    """An error as the one readable line a widget shows (never a traceback)."""
    text = " ".join(str(e).split())
    if isinstance(e, ForgeError | ValueError | Busy):  # ours, written to be read
        return text or type(e).__name__
    log.debug("widget action failed", exc_info=e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def same_model(a: str, b: str) -> bool:
    """Whether two spellings name one model (``tiny`` and ``tiny:latest``)."""
    try:
        return str(parse_name(a)) == str(parse_name(b))
    except ForgeError:
        return a == b


class ForgeWidget(anywidget.AnyWidget):
    """A widget whose traits are written from several threads, and whose front-end
    messages go to ``on_message``; what that raises is shown as ``error``, on one line."""

    error = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        self._sync = threading.RLock()
        super().__init__(**kwargs)
        self.on_msg(self._dispatch)

    def update(self, **traits: Any) -> None:
        """Set traits together (one state message), never interleaved with another thread."""
        with self._sync, self.hold_sync():
            for name, value in traits.items():
                setattr(self, name, value)

    def on_message(self, content: dict[str, Any]) -> None:
        """Handle one message from the front end (it carries all the action needs)."""

    def _dispatch(self, _: object, content: dict[str, Any], buffers: object) -> None:
        try:
            self.on_message(content)
        except Exception as e:
            self.update(error=one_line(e))


def start_thread(target: Callable[..., object], *args: object, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


@dataclass
class Answer:
    """One model's answer, with what the widget measured and what the engine reported.

    ``ttft_ms`` is the engine's time to first token as the kernel sees it: from the call
    to the first chunk with text (it includes a load, whose share is ``load_ms``).
    """

    model: str
    text: str = ""
    tokens: int = 0
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    total_ms: float | None = None
    load_ms: float | None = None
    backend: str = ""
    device: str = ""
    memory: int = 0
    done_reason: str | None = None
    error: str | None = None


# on_token(answer, text): called on the streaming thread for each piece of text
OnToken = Callable[[Answer, str], None]


def stream_answer(
    engine: Any,
    model: str,
    messages: Sequence[Mapping[str, str]],
    *,
    options: Mapping[str, Any] | None = None,
    on_token: OnToken,
    stop: threading.Event | None = None,
) -> Answer:
    """Stream ``model``'s chat reply into an Answer; errors end up in ``answer.error``.

    ``stop`` is checked after every chunk; setting it closes the chunk iterator, which
    cancels the generation in the engine.
    """
    answer = Answer(model)
    start = time.perf_counter()
    first = 0.0
    try:
        chunks: Iterator[Any] = engine.chat(
            model, list(messages), stream=True, options=dict(options or {})
        )
        try:
            for chunk in chunks:
                now = time.perf_counter()
                if chunk.text:
                    answer.tokens += 1
                    if answer.ttft_ms is None:
                        first = now
                        answer.ttft_ms = (now - start) * 1e3
                        place(engine, answer)
                    elif now > first:
                        answer.tokens_per_s = (answer.tokens - 1) / (now - first)
                    answer.text += chunk.text
                    on_token(answer, chunk.text)
                if chunk.done:
                    finish(answer, chunk)
                if stop is not None and stop.is_set() and not chunk.done:
                    answer.done_reason = "cancel"
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
    except Exception as e:
        answer.error = one_line(e)
    answer.total_ms = (time.perf_counter() - start) * 1e3
    return answer


def finish(answer: Answer, chunk: Any) -> None:
    """Fill in the engine's own figures from the last chunk."""
    answer.done_reason = chunk.done_reason
    stats = chunk.stats
    if stats is None:
        return
    answer.tokens = stats.eval_count or answer.tokens
    if stats.eval_duration:
        answer.tokens_per_s = stats.eval_count / (stats.eval_duration / 1e9)
    answer.load_ms = stats.load_duration / 1e6


def place(engine: Any, answer: Answer) -> None:
    """Where the model runs (backend, device, memory), from ``engine.ps()``."""
    try:
        rows = engine.ps()
    except Exception as e:  # the answer matters more than its placement
        log.debug("ps failed", exc_info=e)
        return
    for row in rows:
        if same_model(row.name, answer.model):
            answer.backend, answer.device, answer.memory = row.backend, row.device, row.memory
            return
