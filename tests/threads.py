"""Many threads generating on one engine at once."""

from __future__ import annotations

import threading
from typing import Any

import ferrousforge as ff


def generate_in_threads(
    engine: ff.Engine, model: str, prompts: list[str], options: dict[str, Any]
) -> dict[str, str]:
    """Stream a raw completion of every prompt, each from its own thread; re-raise errors."""
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(p: str) -> None:
        try:
            chunks = engine.generate(model, p, raw=True, options=options, stream=True)
            got[p] = "".join(c.text for c in chunks)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [], errors
    return got
