"""What the widgets share: their engine, one-line errors, and one streamed answer.

Threads: every generation runs on a thread of its own and pushes its tokens to the
front end as it goes, so the kernel is never blocked. Messages from the front end carry
the state their action needs (DESIGN.md §6: custom messages overtake trait updates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..errors import ForgeError
from ..interface import EngineClient
from ..notebook.answer import Answer, OnToken, one_line, same_model, stream_answer

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent


def module(name: str) -> str:
    """The ES module ``name`` of this folder, after ``_dom.js`` (the helpers all share)."""
    return (_HERE / "_dom.js").read_text() + "\n" + (_HERE / name).read_text()


def style(name: str) -> str:
    """The CSS file ``name`` of this folder, after ``_base.css``: the roots' shared rule,
    scoped to this widget's root (``.ff-chat`` for ``chat.css``)."""
    base = (_HERE / "_base.css").read_text().replace(".ff-root", f".ff-{Path(name).stem}")
    return base + "\n" + (_HERE / name).read_text()


def resolve_engine(engine: EngineClient | None) -> EngineClient:
    """``engine``, or the kernel's shared one (``ferrousforge.notebook.shared()``)."""
    if engine is not None:
        return engine
    from ..notebook import shared

    return shared()


class Busy(ForgeError):
    """A run or an answer is still streaming."""

    status = 409


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


__all__ = ["Answer", "OnToken", "one_line", "same_model", "stream_answer"]
