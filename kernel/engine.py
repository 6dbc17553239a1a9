"""The engine: store → scheduler → Mold, with one async API (DESIGN.md §4).

``AsyncEngine`` lives on one event loop (the server's, or the loop thread of the sync
``Engine``). Every public method takes a model name; loading happens on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import psutil

from .access import current_access
from .backends import Backends, provide
from .config import Settings, load_settings, parse_duration
from .devices import choose
from .engine_inference import EngineInference
from .engine_rerank import EngineRerank
from .engine_store import EngineStore
from .engine_tensors import EngineTensors
from .errors import Conflict, ModelNotFound
from .hooks import Hooks, ModelEvent
from .interface import KeepAlive, LoadedModel, Messages
from .limits import Limits
from .loading import default_options, grows, model_defaults, overridden
from .mold import Backend, Device, LoadOptions, Mold, Occupancy
from .progress import ProgressCallback, ignore
from .pulls import Pulls
from .runstate import RunState
from .scheduler import Lease, Runner, Scheduler
from .schema import (
    InferenceOptions,
)
from .store.manifest import Manifest
from .store.names import parse_name
from .store.policy import PullPolicy
from .store.store import Store

log = logging.getLogger(__name__)

__all__ = ["AsyncEngine", "EngineStats", "KeepAlive", "LoadedModel", "Messages"]


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The live numbers an HTTP app's gauges read (``/metrics``)."""

    loaded: list[LoadedModel]
    queued: int
    generated_tokens: int
    occupancy: dict[str, Occupancy]  # by model name


class AsyncEngine(EngineInference, EngineRerank, EngineTensors, EngineStore):
    """The engine on one event loop: the store, the scheduler and the Molds behind the
    ``AsyncEngineClient`` protocol (``interface.py``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        backends: Backends | None = None,
        memory_probe: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        hooks: Hooks | None = None,
    ) -> None:
        s = self.settings = settings or load_settings()
        self.hooks = Hooks.discover() if hooks is None else hooks
        self.limits = Limits.of(s)
        self.store = store or Store(
            s.home,
            pip_args=s.pip_args,
            hf_endpoint=s.hf_endpoint,
            sources=s.pull_sources,
            policy=PullPolicy.from_settings(s, trusted=True),
            partial_max_age=s.partial_max_age,
        )
        self._held: dict[str, Manifest] = {}  # the manifest each loaded model came from
        # A blob stays while a model made from it is loaded, here (before run/<pid>.json
        # says so) or in another process on this home.
        published = self.store.in_use
        self.store.in_use = lambda: {m.path for m in self._held.values()} | set(published())
        self.backends = backends or Backends.discover()
        for backend in self.backends:  # a plugin's custom models are stored entries
            provide(self.store, backend)
        self.scheduler = Scheduler(
            max_loaded=s.max_loaded_models,
            max_queue=s.max_queue,
            # mmap'd weights count as "available" RAM, so loaded models are also charged
            # against a budget: max_memory, by default all of RAM.
            max_memory=s.max_memory or psutil.virtual_memory().total,
            default_keep_alive=s.keep_alive,
            memory_probe=memory_probe or (lambda: psutil.virtual_memory().available),
            clock=clock,
            on_load=lambda r: self.hooks.model_loaded(_model_event(r)),
            on_unload=self._unloaded,
        )
        self._defaults = default_options(s, self.store.home / "cache")
        self._loaded_with: dict[str, LoadOptions] = {}  # what each loaded model was given
        self._reaper: asyncio.Task[None] | None = None
        self._runstate = RunState(s.home)
        self._pending_publish: asyncio.TimerHandle | None = None
        self.generated_tokens = 0  # live, across all models: what /metrics reports
        # Blocking work gets threads of its own (the default executor is shared and small).
        self.pulls = Pulls(s.max_pulls)
        self._probes = ThreadPoolExecutor(1, thread_name_prefix="forge-probe")

    def _unloaded(self, r: Runner) -> None:
        self.hooks.model_unloaded(_model_event(r, loaded=False))
        if (manifest := self._held.pop(r.key, None)) is not None:
            self._publish()  # no longer holding it, then:
            self.store.collect(manifest.path)  # a blob its manifest's removal left behind

    # -- lifecycle -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lease(
        self,
        model: str | Manifest,
        wanted: LoadOptions | None = None,
        keep_alive: KeepAlive = None,
        options: InferenceOptions | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Lease]:
        """Hold ``model`` loaded for one request: with ``wanted`` load options (a ``load()``),
        else as it was loaded last, else with the defaults; ``options.num_ctx`` may ask for
        more context."""
        # every inference and load passes here: a model the caller may not use is a 403,
        # whether the store has it or not
        current_access.get().require_model(model if isinstance(model, str) else model.name)
        manifest = self.store.get(model) if isinstance(model, str) else model
        key = str(parse_name(manifest.name))
        seconds = self.keep_alive_seconds(keep_alive)
        opts = wanted or self._loaded_with.get(key) or self._defaults_for(key)
        num_ctx = options.num_ctx if options is not None else None
        runner = self.scheduler.runners.get(key)
        if runner is None:
            opts = replace(opts, num_ctx=num_ctx or opts.num_ctx)
        elif wanted is not None and self._loaded_with.get(key) != opts and runner.refs == 0:
            await self.scheduler.unload(key)  # asked for other load options: reload
        elif num_ctx and grows(manifest, runner.mold.context_length, num_ctx):
            # A smaller num_ctx is served by the loaded context (the runtime holds the
            # request to it); a larger one reloads only a model nobody is using.
            if runner.refs:
                raise Conflict(
                    f"{key} is loaded with a context of {runner.mold.context_length} tokens "
                    f"and in use; ask for num_ctx <= {runner.mold.context_length}, or retry "
                    "when it is idle"
                )
            opts = replace(opts, num_ctx=num_ctx)
            await self.scheduler.unload(key)
        self._start_reaper()

        async def factory() -> Mold:
            backend, device = choose(manifest, self.backends, opts)
            return backend.open(manifest, device, opts)

        try:
            async with self.scheduler.acquire(
                key, factory, keep_alive=seconds, priority=priority
            ) as lease:
                if lease.load_duration or key not in self._loaded_with:  # what is loaded
                    self._loaded_with[key] = opts
                if key in self._held:
                    self._publish_soon()
                else:  # newly held: other processes must see it before they collect blobs
                    self._held[key] = manifest
                    self._publish()
                yield lease
        finally:  # a request that failed or was cancelled ends its lease too
            self._publish_soon()

    def _defaults_for(self, key: str) -> LoadOptions:
        return model_defaults(self._defaults, self.settings, key)

    def keep_alive_seconds(self, keep_alive: KeepAlive) -> float | None:
        """``keep_alive`` in seconds (-1: forever), within ``max_keep_alive`` (else a 400)."""
        seconds = parse_duration(keep_alive)
        self.limits.keep_alive(seconds)
        return seconds

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            reaper = self.scheduler.run_reaper(on_reap=lambda _: self._publish())
            self._reaper = asyncio.get_running_loop().create_task(reaper)

    def _publish_soon(self) -> None:
        """Publish within 0.1 s: a lease's start and end change only ``in_use`` and the
        slots, and writing the file each time cost ~1 ms of the loop per request."""
        if self._pending_publish is None:
            self._pending_publish = asyncio.get_running_loop().call_later(0.1, self._publish)

    def _publish(self) -> None:
        if self._pending_publish is not None:
            self._pending_publish.cancel()
            self._pending_publish = None
        rows = [asdict(m) for m in self.loaded()]
        for row in rows:
            if (held := self._held.get(row["name"])) is not None:
                row["path"] = held.path
        self._runstate.publish(rows)

    async def load(
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
        """Load ``model`` now (it stays for ``keep_alive``) and describe where it landed.

        A ``backend`` that cannot read the model's format loads its converted form (made
        now when missing, with ``progress``); the row then names that form. ``parallel``:
        the requests it serves at once, when it batches (llama.cpp models do).
        """
        manifest = self.store.get(model)
        if backend is not None:
            manifest = await self._readable(manifest, backend, progress)
        opts = overridden(
            self._defaults_for(str(parse_name(manifest.name))),
            backend=backend,
            device=device,
            gpu_layers=gpu_layers,
            num_ctx=num_ctx,
            parallel=parallel,
        )
        async with self._lease(manifest, opts, keep_alive) as lease:
            name = str(parse_name(lease.mold.name))
        return next((m for m in self.loaded() if m.name == name), self._row_for(lease.mold))

    async def _readable(
        self, manifest: Manifest, backend: str, progress: ProgressCallback
    ) -> Manifest:
        from .forms import readable_form

        self.backends.get(backend)  # an unknown backend is a 400 before any conversion
        return await self.pulls.run(
            f"converting {manifest.name} for {backend}",
            lambda report: readable_form(self.store, self.backends, manifest, backend, report),
            progress,
        )

    async def unload(self, model: str) -> bool:
        """Unload now, or once its running requests end; False if it was not loaded."""
        current_access.get().require_admin("unload models")
        try:
            key = str(parse_name(self.store.get(model).name))
        except ModelNotFound:  # removed from the store while loaded
            key = str(parse_name(model))
        found = await self.scheduler.unload(key)
        self._loaded_with.pop(key, None)  # the next request loads with the defaults again
        self._publish()
        return found

    async def register(self, backend: Backend) -> None:
        """Serve ``backend`` from now on, and store the models it provides (``ff.register``
        of a custom model). One of the same name is replaced, its models unloaded (once
        their requests end), so the next request loads them from the new one."""
        if self.backends.add(backend) is not None:
            for key, runner in list(self.scheduler.runners.items()):
                if runner.mold.backend == backend.name:
                    await self.scheduler.unload(key)
                    self._loaded_with.pop(key, None)
            self._publish()
        provide(self.store, backend)

    def loaded_manifest(self, model: str) -> Manifest:
        """The manifest a loaded model came from, even once removed from the store."""
        held = self._held.get(str(parse_name(model)))
        return held if held is not None else self.store.get(model)

    async def ps(self) -> list[LoadedModel]:
        """The models loaded now that the caller may use."""
        access = current_access.get()
        return [m for m in self.loaded() if access.allows(m.name)]

    def stats(self) -> EngineStats:
        """The live numbers for gauges; cheap, and safe to call from the engine's loop."""
        now = {key: r.mold.occupancy() for key, r in self.scheduler.runners.items()}
        return EngineStats(self.loaded(now), self.scheduler.queued, self.generated_tokens, now)

    def loaded(self, occupancy: dict[str, Occupancy] | None = None) -> list[LoadedModel]:
        rows = []
        for key, r in self.scheduler.runners.items():
            o = occupancy[key] if occupancy is not None else r.mold.occupancy()
            rows.append(
                LoadedModel(
                    key,
                    r.mold.backend,
                    r.mold.device,
                    r.mold.memory,
                    r.mold.context_length,
                    self.scheduler.expires_in(r),
                    r.refs,
                    r.slots.capacity,
                    o.running,
                    o.kv_used,
                    o.kv_cached,
                    o.kv_total,
                )
            )
        return rows

    def _row_for(self, mold: Mold) -> LoadedModel:
        return LoadedModel(
            mold.name, mold.backend, mold.device, mold.memory, mold.context_length, 0.0, 0
        )

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.scheduler.close()
        self._publish()  # cancels a pending one
        self._runstate.publish([])
        self.pulls.close()
        self._probes.shutdown(wait=False, cancel_futures=True)

    async def devices(self) -> list[Device]:
        """The devices the installed runtimes can use, probed on a thread of their own."""
        return await asyncio.get_running_loop().run_in_executor(self._probes, self.backends.devices)


def _model_event(r: Runner, loaded: bool = True) -> ModelEvent:
    m = r.mold
    return ModelEvent(r.key, m.backend, m.device, m.memory, r.load_duration if loaded else 0)
