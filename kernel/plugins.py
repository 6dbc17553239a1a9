"""Entry-point discovery shared by backends and hooks: one scan of installed packages."""

from __future__ import annotations

import functools
import logging
from importlib.metadata import EntryPoint, distributions
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def _all() -> tuple[EntryPoint, ...]:
    # Scanning every installed distribution takes ~10 ms; the set cannot change at run time.
    seen: dict[tuple[str, str], EntryPoint] = {}
    for dist in distributions():
        for ep in dist.entry_points:
            seen.setdefault((ep.group, ep.name), ep)  # the first on sys.path wins
    return tuple(seen.values())


def load_group(group: str) -> list[tuple[str, Any]]:
    """``(name, instance)`` for each entry point in ``group``, called with no arguments.

    A plugin that fails to import or build is logged and skipped: it must not take the
    engine down.
    """
    found = []
    for ep in _all():
        if ep.group != group:
            continue
        try:
            found.append((ep.name, ep.load()()))
        except Exception as e:
            log.warning("plugin %s in %s failed to load: %s", ep.name, group, e)
    return found
