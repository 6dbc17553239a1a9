"""``Engine``: the blocking face of ``AsyncEngine``, for scripts, the CLI and notebooks.

It runs an AsyncEngine on an event loop in a background thread, so calls never need the
caller's loop (a notebook's loop is already running) and many threads may call at once.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from .backends.custom import as_backend
from .config import Settings
from .engine import AsyncEngine, EngineStats
from .interface import ChunkStream, KeepAlive, LoadedModel, Messages
from .mold import Backend, Device
from .progress import ProgressCallback, ignore
from .ranking import Ranking
from .schema import Result
from .store.manifest import Manifest

T = TypeVar("T")
_END = object()


_CLOSE_WAIT = 60.0  # seconds a closed stream may take to stop: one decode step, normally


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="forge-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, stream: AsyncIterator[T]) -> Generator[T, None, None]:
        """Consume an async iterator from this thread. Closing the iterator cancels it and
        returns once it is closed: a model's slot is free again when ``close()`` returns."""
        items: queue.Queue[Any] = queue.Queue()
        started, ended = threading.Event(), threading.Event()

        async def pump() -> None:
            started.set()
            try:
                async for item in stream:
                    items.put(item)
            except BaseException as e:
                items.put(e)
                raise
            else:
                items.put(_END)
            finally:
                try:
                    if (close := getattr(stream, "aclose", None)) is not None:
                        await close()
                finally:
                    ended.set()

        fut: Future[None] = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not fut.done():
                fut.cancel()
                if started.is_set():
                    ended.wait(_CLOSE_WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class Engine:
    """Load, run and manage models. ``import ferrousforge as ff; ff.Engine()``.

    The ``EngineClient`` protocol (``interface.py``) in process: every method blocks until
    done; ``stream=True`` returns an iterator of Chunks.
    """

    def __init__(self, settings: Settings | None = None, **kw: Any) -> None:
        self._loop = LoopThread()
        self._engine: AsyncEngine = self._loop.run(_make(settings, kw))
        self.settings = self._engine.settings
        self.store = self._engine.store  # for tests and benchmarks; callers use the methods
        self.backends = self._engine.backends
        self._closed = False
        atexit.register(self.close)  # unload cleanly even when the caller forgets to

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unload every model and stop the loop thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._loop.run(self._engine.close())
        self._loop.close()

    # -- inference -------------------------------------------------------------------

    @overload
    def generate(
        self, model: str, prompt: str, *, stream: Literal[False] = ..., **kw: Any
    ) -> Result: ...
    @overload
    def generate(
        self, model: str, prompt: str, *, stream: Literal[True], **kw: Any
    ) -> ChunkStream: ...
    def generate(
        self, model: str, prompt: str, *, stream: bool = False, **kw: Any
    ) -> Result | ChunkStream:
        """Complete ``prompt``. Keywords: system, raw, format, think, context, options,
        keep_alive."""
        if stream:
            return self._loop.iterate(self._engine.generate_stream(model, prompt, **kw))
        return self._loop.run(self._engine.generate(model, prompt, **kw))

    @overload
    def chat(
        self, model: str, messages: Messages, *, stream: Literal[False] = ..., **kw: Any
    ) -> Result: ...
    @overload
    def chat(
        self, model: str, messages: Messages, *, stream: Literal[True], **kw: Any
    ) -> ChunkStream: ...
    def chat(
        self, model: str, messages: Messages, *, stream: bool = False, **kw: Any
    ) -> Result | ChunkStream:
        """Answer a conversation through the model's chat template. Keywords: tools,
        format, think, options, keep_alive."""
        if stream:
            return self._loop.iterate(self._engine.chat_stream(model, messages, **kw))
        return self._loop.run(self._engine.chat(model, messages, **kw))

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result:
        return self._loop.run(
            self._engine.embed(model, input, truncate=truncate, keep_alive=keep_alive)
        )

    def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking:
        """``documents`` by relevance to ``query``, best first (``AsyncEngine.rerank``)."""
        return self._loop.run(
            self._engine.rerank(model, query, documents, top_n=top_n, keep_alive=keep_alive)
        )

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        keep_alive: KeepAlive = None,
    ) -> Result:
        """Named tensors through a tensor model; ``Result.tensors`` (``AsyncEngine.infer``)."""
        return self._loop.run(
            self._engine.infer(model, inputs, outputs=outputs, keep_alive=keep_alive)
        )

    def tokenize(self, model: str, text: str) -> list[int]:
        return self._loop.run(self._engine.tokenize(model, text))

    def detokenize(self, model: str, ids: Sequence[int]) -> str:
        return self._loop.run(self._engine.detokenize(model, ids))

    # -- models ----------------------------------------------------------------------

    def load(
        self,
        model: str,
        *,
        backend: str | None = None,
        device: str | None = None,
        gpu_layers: int | None = None,
        num_ctx: int | None = None,
        keep_alive: KeepAlive = None,
        progress: ProgressCallback = ignore,
        parallel: int | None = None,
    ) -> LoadedModel:
        """Load now; a ``backend`` that cannot read the model loads its converted form;
        ``parallel``: requests served at once by a model that batches."""
        return self._loop.run(
            self._engine.load(
                model,
                backend=backend,
                device=device,
                gpu_layers=gpu_layers,
                num_ctx=num_ctx,
                keep_alive=keep_alive,
                progress=progress,
                parallel=parallel,
            )
        )

    def unload(self, model: str) -> bool:
        return self._loop.run(self._engine.unload(model))

    def ps(self) -> list[LoadedModel]:
        return self._loop.run(self._engine.ps())

    def stats(self) -> EngineStats:
        """The live numbers ``/metrics`` reads: models, queue, batches by their width."""

        async def read() -> EngineStats:
            return self._engine.stats()

        return self._loop.run(read())

    def devices(self) -> list[Device]:
        return self._loop.run(self._engine.devices())

    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        force: bool = False,
    ) -> Manifest:
        return self._loop.run(
            self._engine.pull(spec, name=name, sha256=sha256, progress=progress, force=force)
        )

    def show(self, model: str) -> Manifest:
        return self._loop.run(self._engine.show(model))

    def rm(self, model: str) -> None:
        """Unload ``model`` (once its requests end), then remove it from the store."""
        self._loop.run(self._engine.rm(model))

    def cp(self, source: str, destination: str) -> Manifest:
        return self._loop.run(self._engine.cp(source, destination))

    def convert(
        self, model: str, to: str, *, progress: ProgressCallback = ignore, **kw: Any
    ) -> Manifest:
        """``forge convert``: keywords target, tune and shapes (for ``to="tvm"``)."""
        return self._loop.run(self._engine.convert(model, to, progress=progress, **kw))

    def register(
        self, model: object, *, name: str | None = None, models: Sequence[str] | None = None
    ) -> Backend:
        """Serve a custom model from now on: a ``CustomModel`` class, any class, factory or
        object with task methods (embed, generate, chat, ...), or a Backend; ``name`` and
        ``models`` override its backend's name and the model names it serves."""
        backend = as_backend(model, name=name, models=models)
        self._loop.run(self._engine.register(backend))
        return backend

    def sweep(self) -> builtins.list[Path]:
        return self._loop.run(self._engine.sweep())

    def verify(self, progress: ProgressCallback = ignore) -> dict[str, str]:
        return self._loop.run(self._engine.verify(progress))

    def list(self) -> builtins.list[Manifest]:
        return self._loop.run(self._engine.list())


async def _make(settings: Settings | None, kw: dict[str, Any]) -> AsyncEngine:
    return AsyncEngine(settings, **kw)
