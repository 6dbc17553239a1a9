"""Which models each live engine process holds, so ``forge ps`` can see other processes.

Each engine writes ``$FORGE_HOME/run/<pid>.json`` when its set of loaded models changes;
readers skip (and remove) files whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil


class RunState:
    """This process's record; rewritten only when what it says changes."""

    def __init__(self, home: Path) -> None:
        self.path = home / "run" / f"{os.getpid()}.json"
        self._last = ""

    def publish(self, models: list[dict[str, Any]]) -> None:
        """Record this process's loaded models (an empty list removes the record)."""
        rows = [{k: v for k, v in m.items() if k != "expires_in"} | _expiry(m) for m in models]
        payload = json.dumps({"pid": os.getpid(), "models": rows}, sort_keys=True)
        if payload == self._last:
            return
        self._last = payload
        if not models:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(payload)
        os.replace(tmp, self.path)


def _expiry(m: dict[str, Any]) -> dict[str, Any]:
    left = m.get("expires_in")
    return {"expires_at": None if left is None else round(time.time() + left)}


def read_all(home: Path) -> list[dict[str, Any]]:
    """Loaded models of every live engine process, each row with its ``pid``."""
    rows: list[dict[str, Any]] = []
    for path in sorted((home / "run").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(int(data.get("pid", -1))):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        rows += [m | {"pid": data["pid"]} for m in data.get("models", [])]
    return rows
