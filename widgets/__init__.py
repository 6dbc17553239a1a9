"""Notebook widgets over the engine (anywidget): each a Python class plus one ES module.

    from ferrousforge.widgets import Chat, Compare, Models

They use ``ferrousforge.notebook.shared()`` unless given ``engine=``. Needs the
``jupyter`` extra.
"""

from __future__ import annotations

from ._common import Answer
from .chat import Chat
from .compare import Compare, CompareResult
from .models import Models

__all__ = ["Answer", "Chat", "Compare", "CompareResult", "Models"]
