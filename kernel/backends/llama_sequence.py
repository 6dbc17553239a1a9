"""One request's sequence in a ``Batcher``, and what its reader has taken."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..schema import Chunk
from .stops import StopMatcher


@dataclass(eq=False)
class Reader:
    """What the reader of a sequence has taken, written only on the event loop's side: the
    worker compares it with what it sent, so a reader that stopped reading is found."""

    taken: int = 0
    last: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Sequence:
    """One request's sequence: its tokens, sampler chain and what it has said so far."""

    tokens: list[int]  # what must be in its KV cells: the prompt, then (after a preemption)
    budget: int  # tokens it may still generate
    chain: Any  # its llama_sampler chain
    emit: Callable[[Chunk], None]
    finished: Callable[[BaseException | None], None]
    cancel: threading.Event
    stop: list[str]
    reader: Reader
    emitted: int = 0  # chunks sent to the reader (only the worker thread writes it)
    prompt_count: int = 0
    cached: int = 0  # prompt tokens found in the KV cache, not evaluated again
    id: int = -1  # its seq_id while admitted
    fed: int = 0  # tokens already in its KV cells
    next: int | None = None  # the sampled token to evaluate next step
    answer: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    start: int = field(default_factory=time.perf_counter_ns)
    first: int = 0
    matcher: StopMatcher = field(init=False)
    decoder: Any = field(init=False)

    def __post_init__(self) -> None:
        self.matcher = StopMatcher(self.stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.prompt_count = len(self.tokens)
