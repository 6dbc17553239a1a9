"""Notebook widgets over the engine (anywidget): each a Python class plus one ES module.

    from ferrousforge.widgets import BrowserMold, Chat, Compare, Models

They use ``ferrousforge.notebook.shared()`` unless given ``engine=``; ``BrowserMold`` runs
its model in the notebook's own browser tab instead (``web/forge.js``). Needs the
``jupyter`` extra.
"""

from __future__ import annotations

from ._common import Answer
from .browser import BrowserError, BrowserFuture, BrowserMold, BrowserPending, BrowserResult
from .chat import Chat
from .compare import Compare, CompareResult
from .models import Models

__all__ = [
    "Answer",
    "BrowserError",
    "BrowserFuture",
    "BrowserMold",
    "BrowserPending",
    "BrowserResult",
    "Chat",
    "Compare",
    "CompareResult",
    "Models",
]
