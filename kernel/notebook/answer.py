"""One streamed answer: the text, and what was measured on the way (time to first token,
tokens/s) and where it ran. The magics and the widgets both stream through here.

``stop`` and interrupts close the engine's chunk iterator, which cancels the generation
there (in-process or over HTTP).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ForgeError
from ..interface import EngineClient
from ..store.names import parse_name

log = logging.getLogger(__name__)


def one_line(e: BaseException) -> str:
    """An error as the one readable line a widget shows (never a traceback)."""
    text = " ".join(str(e).split())
    if isinstance(e, ForgeError | ValueError):  # ours, written to be read
        return text or type(e).__name__
    log.debug("widget action failed", exc_info=e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def same_model(a: str, b: str) -> bool:
    """Whether two spellings name one model (``tiny`` and ``tiny:latest``)."""
    try:
        return str(parse_name(a)) == str(parse_name(b))
    except ForgeError:
        return a == b


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
    prompt_tokens: int = 0
    messages: list[dict[str, str]] = field(default_factory=list)  # what was sent

    def __str__(self) -> str:
        return self.text


# on_token(answer, text): called on the streaming thread for each piece of text
OnToken = Callable[[Answer, str], None]


def stream_answer(
    engine: EngineClient,
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
    answer = Answer(model, messages=[dict(m) for m in messages])
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
    answer.prompt_tokens = stats.prompt_eval_count
    if stats.eval_duration:
        answer.tokens_per_s = stats.eval_count / (stats.eval_duration / 1e9)
    answer.load_ms = stats.load_duration / 1e6


def place(engine: EngineClient, answer: Answer) -> None:
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
