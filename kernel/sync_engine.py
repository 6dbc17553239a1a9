"""``Engine``: the blocking face of ``AsyncEngine``, for scripts, the CLI and notebooks.

It runs an AsyncEngine on an event loop in a background thread, so calls never need the
caller's loop (a notebook's loop is already running) and many threads may call at once.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, overload

from .config import Settings
from .engine import AsyncEngine, LoadedModel, Messages
from .mold import Device
from .progress import ProgressCallback, ignore
from .schema import Chunk, Result
from .store.manifest import Manifest

T = TypeVar("T")
_END = object()


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

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """Consume an async iterator from this thread; closing the iterator cancels it."""
        items: queue.Queue[Any] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in stream:
                    items.put(item)
            except BaseException as e:
                items.put(e)
                raise
            else:
                items.put(_END)

        fut: Future[None] = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not fut.done():
                fut.cancel()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class Engine:
    """Load, run and manage models. ``import ferrousforge as ff; ff.Engine()``.

    Every method blocks until done; ``stream=True`` returns an iterator of Chunks.
    """

    def __init__(self, settings: Settings | None = None, **kw: Any) -> None:
        self._loop = LoopThread()
        self._engine: AsyncEngine = self._loop.run(_make(settings, kw))
        self.settings = self._engine.settings
        self.store = self._engine.store
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

    @overload
    def generate(
        self, model: str, prompt: str, *, stream: Literal[False] = ..., **kw: Any
    ) -> Result: ...
    @overload
    def generate(
        self, model: str, prompt: str, *, stream: Literal[True], **kw: Any
    ) -> Iterator[Chunk]: ...
    def generate(
        self, model: str, prompt: str, *, stream: bool = False, **kw: Any
    ) -> Result | Iterator[Chunk]:
        """Complete ``prompt``. Keywords: system, raw, options, keep_alive, load."""
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
    ) -> Iterator[Chunk]: ...
    def chat(
        self, model: str, messages: Messages, *, stream: bool = False, **kw: Any
    ) -> Result | Iterator[Chunk]:
        """Answer a conversation through the model's chat template."""
        if stream:
            return self._loop.iterate(self._engine.chat_stream(model, messages, **kw))
        return self._loop.run(self._engine.chat(model, messages, **kw))

    def embed(self, model: str, input: str | Sequence[str], **kw: Any) -> Result:
        return self._loop.run(self._engine.embed(model, input, **kw))

    def tokenize(self, model: str, text: str) -> list[int]:
        return self._loop.run(self._engine.tokenize(model, text))

    def detokenize(self, model: str, ids: Sequence[int]) -> str:
        return self._loop.run(self._engine.detokenize(model, ids))

    def load(self, model: str, **kw: Any) -> LoadedModel:
        """Load now. Keywords: backend, device, gpu_layers, num_ctx, keep_alive."""
        return self._loop.run(self._engine.load(model, **kw))

    def unload(self, model: str) -> bool:
        return self._loop.run(self._engine.unload(model))

    def ps(self) -> list[LoadedModel]:
        return self._loop.run(_call(self._engine.ps))

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
        return self.store.get(model)

    def rm(self, model: str) -> None:
        self.unload(model)
        self.store.rm(model)

    def cp(self, src: str, dst: str) -> Manifest:
        return self.store.cp(src, dst)

    def devices(self) -> list[Device]:
        return self._loop.run(self._engine.probe_devices())

    def list(self) -> list[Manifest]:  # last: inside the class, ``list`` means this method
        return self.store.list()


async def _make(settings: Settings | None, kw: dict[str, Any]) -> AsyncEngine:
    return AsyncEngine(settings, **kw)


async def _call(fn: Any) -> Any:
    return fn()
