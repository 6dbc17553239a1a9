"""``BrowserMold``: a browser Mold in the notebook's own tab, driven from Python.

The widget's ES module imports ``forge.js`` from the page's origin (in Jupyter:
``<base_url>forge/web/forge.js``, served by the FerrousForge server extension), loads the
model there (WASM or WebGPU, with progress and the reason for the target), runs the
requests Python queues, and sends the answers back.

    w = BrowserMold("minilm:l6")             # shows progress, then backend · device · why
    fut = w.embed(["a cat", "a kitten"])     # a Future: the kernel cannot wait in this cell
    fut.result().embeddings                  # in a later cell, once the widget shows it

Jupyter delivers the browser's answer only between cells (a running cell blocks the
kernel's messages), so ``embed`` and ``generate`` return a ``BrowserFuture`` at once;
``.result()`` inside the cell that asked raises ``BrowserPending`` instead of hanging.
``last`` holds the latest result. Requests live in the ``requests`` trait until answered,
so a page that opens later (or reloads) still runs them.
"""

from __future__ import annotations

import sys
import threading
import uuid
from array import array
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import traitlets as t

from ..errors import ForgeError
from ._common import ForgeWidget, module, one_line, style

TARGETS = ("auto", "wasm", "webgpu")


class BrowserError(ForgeError):
    """The browser Mold failed: forge.js missing, a load or a run failed (one line)."""


class BrowserPending(BrowserError, TimeoutError):
    """The answer cannot arrive while this cell runs: ask for it in a later cell."""


@dataclass
class BrowserResult:
    """One answer from the page: embeddings (``embed``) or text (``generate``), and where
    it ran."""

    kind: str  # "embed" | "generate"
    model: str  # the store entry that ran (an encoder's ONNX export: "minilm:l6-onnx")
    runtime: str  # "ort" | "wllama" | "pyodide"
    target: str  # "wasm" | "webgpu"
    why: str  # why that target ("wasm was asked for", "fell back to WASM: ...")
    backend: str  # "onnxruntime-web 1.30.0 (wasm)"
    device: str
    ms: float  # the run in the page, without the trip through the kernel
    embeddings: list[list[float]] = field(default_factory=list, repr=False)
    ids: list[list[int]] = field(default_factory=list, repr=False)  # token ids per text
    text: str = ""
    tokens: int = 0
    tokens_per_s: float | None = None
    threads: int | None = None


def _kernel_would_block() -> bool:
    """Whether waiting here blocks the comm messages that would end the wait: the kernel's
    main thread, inside a cell."""
    if threading.current_thread() is not threading.main_thread():
        return False
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and bool(app.IPKernelApp.initialized())


class BrowserFuture(Future[BrowserResult]):
    """The answer of one request. Resolved between cells, when the page's message arrives;
    waiting on it in the cell that asked raises ``BrowserPending`` instead of hanging."""

    def result(self, timeout: float | None = None) -> BrowserResult:
        self._check()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._check()
        return super().exception(timeout)

    def _check(self) -> None:
        if not self.done() and _kernel_would_block():
            raise BrowserPending(
                "the browser has not answered yet, and its answer reaches the kernel only "
                "between cells: call .result() in a later cell, once the widget shows it"
            )


class BrowserMold(ForgeWidget):
    """Run a browser Mold (``web/forge.js``) in this notebook's tab; results come back here."""

    _esm = module("browser.js")
    _css = style("browser.css")

    model = t.Unicode("").tag(sync=True)
    target = t.Enum(TARGETS, "auto").tag(sync=True)
    runtime = t.Unicode(None, allow_none=True).tag(sync=True)  # None: from the model's format
    web_url = t.Unicode("").tag(sync=True)  # forge.js or its folder; "": Jupyter's extension
    requests = t.List(t.Dict()).tag(sync=True)  # queued for the page, dropped when answered
    # set by the page: "" (no page yet), loading, ready, running, error; and what runs it
    status = t.Unicode("").tag(sync=True)
    info = t.Dict().tag(sync=True)  # runtime, target, why, backend, device, threads, load_ms
    _key = t.Unicode().tag(sync=True)  # names this widget's one runner in the page

    @t.default("_key")
    def _new_key(self) -> str:
        return uuid.uuid4().hex

    def __init__(
        self,
        model: str,
        *,
        target: str = "auto",
        runtime: str | None = None,
        web_url: str = "",
        **kwargs: Any,
    ) -> None:
        """``target``: auto (WebGPU when a hardware adapter is there, else WASM), wasm or
        webgpu. ``web_url``: where forge.js is served, for hosts other than Jupyter with
        the server extension (e.g. ``http://127.0.0.1:11434/web/`` from ``forge serve``)."""
        self.last: BrowserResult | None = None
        self._pending: dict[int, BrowserFuture] = {}
        self._ids = 0
        self._lock = threading.Lock()
        super().__init__(model=model, target=target, runtime=runtime, web_url=web_url, **kwargs)

    # -- the Python API ------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str]) -> BrowserFuture:
        """Sentence embeddings of ``texts``, computed in the page."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or not all(isinstance(x, str) for x in items):
            raise ValueError("embed takes a string or a non-empty list of strings")
        return self._ask({"kind": "embed", "texts": items})

    def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
    ) -> BrowserFuture:
        """Generate from ``prompt`` (text, or chat messages) in the page; the text streams
        into the widget, and the whole answer comes back."""
        body: Any = prompt if isinstance(prompt, str) else [dict(m) for m in prompt]
        if not body:
            raise ValueError("generate takes a prompt")
        request = {"kind": "generate", "prompt": body, "max_tokens": max_tokens}
        return self._ask(request | {"temperature": temperature})

    def pending(self) -> int:
        """How many requests the page has not answered yet."""
        with self._lock:
            return len(self._pending)

    # -- requests and answers -------------------------------------------------------------

    def _ask(self, request: dict[str, Any]) -> BrowserFuture:
        future = BrowserFuture()
        with self._lock:
            self._ids += 1
            self._pending[self._ids] = future
            self.update(requests=[*self.requests, {"id": self._ids, **request}], error="")
        return future

    def _dispatch(self, _: object, content: dict[str, Any], buffers: object) -> None:
        try:
            if content.get("type") == "result":
                self._answer(content, list(buffers) if isinstance(buffers, list) else [])
        except Exception as e:
            self.update(error=one_line(e))

    def _answer(self, content: dict[str, Any], buffers: list[Any]) -> None:
        """One answer from the page: resolve its future; a second page's duplicate is
        ignored."""
        rid = int(content["id"])
        with self._lock:
            future = self._pending.pop(rid, None)
            self.update(requests=[r for r in self.requests if r.get("id") != rid])
        if future is None or future.cancelled():
            return
        try:
            if content.get("error"):
                raise BrowserError(str(content["error"]))
            result = _result(content, buffers)
        except Exception as e:
            future.set_exception(e if isinstance(e, BrowserError) else BrowserError(one_line(e)))
            raise
        self.last = result
        future.set_result(result)


def _result(content: dict[str, Any], buffers: list[Any]) -> BrowserResult:
    where = content.get("info") or {}
    result = BrowserResult(
        kind=str(content["kind"]),
        model=str(where.get("model", "")),
        runtime=str(where.get("runtime", "")),
        target=str(where.get("target", "")),
        why=str(where.get("why", "")),
        backend=str(where.get("backend", "")),
        device=str(where.get("device", "")),
        threads=where.get("threads"),
        ms=float(content.get("ms") or 0.0),
        ids=[list(map(int, row)) for row in content.get("ids") or []],
        text=str(content.get("text") or ""),
        tokens=int(content.get("tokens") or 0),
        tokens_per_s=content.get("tokens_per_s"),
    )
    if result.kind == "embed":
        rows, dims = int(content["rows"]), int(content["dims"])
        flat = array("f")  # the page's Float32Array, row after row
        flat.frombytes(bytes(buffers[0]) if buffers else b"")
        if len(flat) != rows * dims:
            raise BrowserError(f"the page sent {len(flat)} floats for {rows}×{dims} embeddings")
        values = flat.tolist()
        result.embeddings = [values[i * dims : (i + 1) * dims] for i in range(rows)]
    return result
