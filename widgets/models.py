"""``Models``: a live table of the store and the loaded models.

Pull (with a progress bar), load and unload from buttons; memory use and keep-alive
countdowns per row. While a view is shown, a background thread refreshes the table every
``interval`` seconds and sends only what changed.

    m = Models()
    m                       # the table
    m.load("smollm2:135m")  # or from Python: each action blocks until done
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import traitlets as t

from ..interface import EngineClient
from ..progress import Progress
from ._common import (
    ForgeWidget,
    module,
    one_line,
    resolve_engine,
    same_model,
    start_thread,
    style,
)

T = TypeVar("T")


class Models(ForgeWidget):
    """Every model in the store (and any loaded one gone from it), one row each."""

    _esm = module("models.js")
    _css = style("models.css")

    rows = t.List(t.Dict()).tag(sync=True)
    pulls = t.Dict().tag(sync=True)  # spec -> {"status", "total", "completed"} while pulling
    busy = t.List(t.Unicode()).tag(sync=True)  # models with a load or unload in flight

    def __init__(
        self, *, engine: EngineClient | None = None, interval: float = 1.0, **kwargs: Any
    ) -> None:
        self.engine = resolve_engine(engine)
        self.interval = interval
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        super().__init__(**kwargs)
        self.refresh()

    # -- the Python API ------------------------------------------------------------------

    def refresh(self) -> list[dict[str, Any]]:
        """Read the store and the loaded models; update the table if anything changed."""
        try:
            fresh = table(self.engine.list(), self.engine.ps(), time.time())
        except Exception as e:
            self.update(error=one_line(e))
            return list(self.rows)
        with self._sync:
            if not same_rows(fresh, self.rows):
                self.update(rows=fresh)
        return fresh

    def load(self, model: str, **kwargs: Any) -> Any:
        """Load ``model`` (keywords as ``engine.load``); return its ``ps`` row."""
        return self._act(model, lambda: self.engine.load(model, **kwargs))

    def unload(self, model: str) -> bool:
        """Unload ``model``; False if it was not loaded."""
        return bool(self._act(model, lambda: self.engine.unload(model)))

    def pull(self, spec: str, *, name: str | None = None) -> Any:
        """Pull ``spec`` (a catalog name, file, folder or URL) with a progress bar."""
        last = [0.0]

        def progress(p: Progress) -> None:
            now = time.monotonic()
            row = {"status": p.status, "total": p.total, "completed": p.completed}
            if now - last[0] >= 0.1 or p.completed == p.total or p.status == "success":
                last[0] = now
                with self._sync:
                    self.update(pulls={**self.pulls, spec: row})

        with self._sync:
            self.update(pulls={**self.pulls, spec: {"status": "starting", "total": None}})
        try:
            return self._act("", lambda: self.engine.pull(spec, name=name, progress=progress))
        finally:
            with self._sync:
                self.update(pulls={k: v for k, v in self.pulls.items() if k != spec})

    def close(self) -> None:
        """Stop refreshing and close the widget."""
        self._closed.set()
        super().close()

    # -- the front end --------------------------------------------------------------------

    def on_message(self, content: dict[str, Any]) -> None:
        """Button clicks; each message names its model or spec (DESIGN.md §6)."""
        kind = content.get("type")
        if kind == "watch":
            self._watch()
        elif kind == "refresh":
            self.refresh()
        elif kind in ("load", "unload"):
            action = self.load if kind == "load" else self.unload
            self._background(action, str(content["model"]))
        elif kind == "pull":
            spec = str(content.get("spec", "")).strip()
            if not spec:
                raise ValueError("type a model name, file or URL to pull")
            self._background(self.pull, spec)

    def _background(self, action: Callable[[str], object], arg: str) -> None:
        def work() -> None:
            try:
                action(arg)
            except Exception as e:
                self.update(error=one_line(e))

        start_thread(work, name="forge-models")

    def _watch(self) -> None:
        """Refresh every ``interval`` seconds from a daemon thread, until ``close()``."""
        if self._poller is None or not self._poller.is_alive():
            self._poller = start_thread(self._poll, name="forge-models-poll")

    def _poll(self) -> None:
        while not self._closed.wait(self.interval):
            self.refresh()

    def _act(self, model: str, fn: Callable[[], T]) -> T:
        with self._sync:
            self.update(busy=[*self.busy, model] if model else self.busy, error="")
        try:
            return fn()
        finally:
            self.refresh()  # the row changes before its button comes back
            if model:
                with self._sync:
                    rest = list(self.busy)
                    rest.remove(model)
                    self.update(busy=rest)


def table(stored: Sequence[Any], loaded: Sequence[Any], now: float) -> list[dict[str, Any]]:
    """One row per stored model, then one per loaded model the store no longer has."""
    rows: list[dict[str, Any]] = []
    left = list(loaded)
    for m in stored:
        row = {"name": m.name, "format": m.format, "size": m.size, "loaded": False}
        hit = next((r for r in left if same_model(r.name, m.name)), None)
        if hit is not None:
            left.remove(hit)
            row |= _placement(hit, now)
        rows.append(row)
    for r in left:
        rows.append({"name": r.name, "format": "", "size": 0} | _placement(r, now))
    return rows


def _placement(r: Any, now: float) -> dict[str, Any]:
    expires = None if r.expires_in is None or r.expires_in < 0 else now + r.expires_in
    return {
        "loaded": True,
        "backend": r.backend,
        "device": r.device,
        "memory": r.memory,
        "context_length": r.context_length,
        "in_use": r.in_use,
        "expires_at": expires,  # epoch seconds; the browser counts down to it
    }


def same_rows(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    """Equal, but for expiry times that differ by under a second (polling jitter)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        ex, ey = x.get("expires_at"), y.get("expires_at")
        if (ex is None) != (ey is None) or (ex is not None and abs(ex - ey) >= 1.0):
            return False
        if {k: v for k, v in x.items() if k != "expires_at"} != {
            k: v for k, v in y.items() if k != "expires_at"
        }:
            return False
    return True
