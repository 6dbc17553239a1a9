"""Fault injection for the crash tests: ``point(name)`` kills this process with SIGKILL when
``FORGE_FAULTS`` (comma-separated) names it, and does nothing otherwise.

The points sit between the steps of the store's changes (a blob moved but its manifest not
yet written, a manifest replaced but the old blob not yet released), where a crash is the
hardest to recover from. ``tests/test_faults.py`` kills a real server at each.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here if asked to (``FORGE_FAULTS=name``)."""
    wanted = os.environ.get("FORGE_FAULTS")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
