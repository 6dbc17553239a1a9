"""The engine: store → scheduler → Mold, with one async API (DESIGN.md §4).

``AsyncEngine`` lives on one event loop (the server's, or the loop thread of the sync
``Engine``). Every public method takes a model name; loading happens on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from .backends import Backends
from .config import Settings, load_settings, parse_duration
from .devices import choose
from .errors import Conflict, ModelNotFound, UnsupportedTask
from .hooks import Hooks, InferenceEvent, ModelEvent, current_client, current_request_id
from .limits import Limits
from .mold import Device, LoadOptions, Mold
from .progress import ProgressCallback, ignore
from .pulls import Pulls
from .runstate import RunState
from .scheduler import Lease, Runner, Scheduler
from .schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    Format,
    GenerateRequest,
    InferenceOptions,
    Message,
    Result,
    Stats,
    chat_request,
    collect,
    generate_request,
)
from .store.manifest import Manifest
from .store.names import parse_name
from .store.policy import PullPolicy
from .store.store import Store

log = logging.getLogger(__name__)

KeepAlive = str | float | int | None
Messages = Sequence[Message | dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One row of ``ps``."""

    name: str
    backend: str
    device: str
    memory: int
    context_length: int
    expires_in: float | None  # seconds; None while in use or kept forever
    in_use: int


class AsyncEngine:
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
        self.scheduler = Scheduler(
            max_loaded=s.max_loaded_models,
            num_parallel=s.num_parallel,
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
        self._opts: dict[str, LoadOptions] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._runstate = RunState(s.home)
        self.generated_tokens = 0  # live, across all models: what /metrics reports
        # Blocking work gets threads of its own (the default executor is shared and small).
        self.pulls = Pulls(self.store, s.max_pulls)
        self._probes = ThreadPoolExecutor(1, thread_name_prefix="forge-probe")

    def _unloaded(self, r: Runner) -> None:
        self.hooks.model_unloaded(_model_event(r, loaded=False))
        if (manifest := self._held.pop(r.key, None)) is not None:
            self._publish()  # no longer holding it, then:
            self.store.collect(manifest.path)  # a blob its manifest's removal left behind

    # -- lifecycle -------------------------------------------------------------------

    def _default_opts(self) -> LoadOptions:
        s = self.settings
        return LoadOptions(
            backend=s.backend,
            device=s.device,
            num_ctx=s.num_ctx,
            threads=s.threads,
            cache_dir=self.store.home / "cache",
            extra={
                "onnx_optimization": s.onnx_optimization,
                "onnx_io_binding": s.onnx_io_binding,
                "max_grammar_bytes": s.max_grammar_bytes,
            },
        )

    def _completed(self, opts: LoadOptions) -> LoadOptions:
        """Options from a caller, with the engine's cache and backend settings filled in."""
        base = self._default_opts()
        return replace(
            opts, cache_dir=opts.cache_dir or base.cache_dir, extra={**base.extra, **opts.extra}
        )

    @contextlib.asynccontextmanager
    async def _lease(
        self,
        model: str | Manifest,
        load: LoadOptions | None = None,
        keep_alive: KeepAlive = None,
        options: InferenceOptions | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Lease]:
        manifest = self.store.get(model) if isinstance(model, str) else model
        key = str(parse_name(manifest.name))
        seconds = self.keep_alive_seconds(keep_alive)
        opts = self._completed(load or self._opts.get(key) or self._default_opts())
        num_ctx = options.num_ctx if options is not None else None
        runner = self.scheduler.runners.get(key)
        if runner is None:
            opts = replace(opts, num_ctx=num_ctx or opts.num_ctx)
        elif load is not None and self._opts.get(key) != opts and runner.refs == 0:
            await self.scheduler.unload(key)  # asked for other load options: reload
        elif num_ctx and _grows(manifest, runner.mold.context_length, num_ctx):
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

        async with self.scheduler.acquire(
            key, factory, keep_alive=seconds, priority=priority
        ) as lease:
            if lease.load_duration or key not in self._opts:  # remember what is loaded
                self._opts[key] = opts
            self._held.setdefault(key, manifest)
            self._publish()
            yield lease
        self._publish()

    def keep_alive_seconds(self, keep_alive: KeepAlive) -> float | None:
        """``keep_alive`` in seconds (-1: forever), within ``max_keep_alive`` (else a 400)."""
        seconds = parse_duration(keep_alive)
        self.limits.keep_alive(seconds)
        return seconds

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            reaper = self.scheduler.run_reaper(on_reap=lambda _: self._publish())
            self._reaper = asyncio.get_running_loop().create_task(reaper)

    def _publish(self) -> None:
        rows = [asdict(m) for m in self.ps()]
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
    ) -> LoadedModel:
        """Load ``model`` now (it stays for ``keep_alive``) and describe where it landed."""
        base = self._default_opts()
        opts = replace(
            base,
            backend=backend or base.backend,
            device=device or base.device,
            gpu_layers=gpu_layers,
            num_ctx=num_ctx or base.num_ctx,
        )
        async with self._lease(model, opts, keep_alive) as lease:
            name = str(parse_name(lease.mold.name))
        return next((m for m in self.ps() if m.name == name), self._row_for(lease.mold))

    async def unload(self, model: str) -> bool:
        """Unload now, or once its running requests end; False if it was not loaded."""
        try:
            key = str(parse_name(self.store.get(model).name))
        except ModelNotFound:  # removed from the store while loaded
            key = str(parse_name(model))
        found = await self.scheduler.unload(key)
        self._opts.pop(key, None)  # the next request loads with the defaults again
        self._publish()
        return found

    def loaded_manifest(self, model: str) -> Manifest:
        """The manifest a loaded model came from, even once removed from the store."""
        held = self._held.get(str(parse_name(model)))
        return held if held is not None else self.store.get(model)

    def ps(self) -> list[LoadedModel]:
        return [
            LoadedModel(
                r.key,
                r.mold.backend,
                r.mold.device,
                r.mold.memory,
                r.mold.context_length,
                self.scheduler.expires_in(r),
                r.refs,
            )
            for r in self.scheduler.runners.values()
        ]

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
        self._runstate.publish([])
        self.pulls.close()
        self._probes.shutdown(wait=False, cancel_futures=True)

    # -- inference -------------------------------------------------------------------

    async def stream(
        self,
        model: str,
        req: GenerateRequest | ChatRequest,
        *,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to a full request record (what the HTTP API builds)."""
        start = time.perf_counter_ns()
        manifest, task, event = self._prepare(model, req)
        first, last, error = 0, Chunk(), None
        prompt = seen = 0
        async with self._lease(manifest, load, keep_alive, req.options, priority) as lease:
            _require(lease.mold, task)
            self.hooks.inference_started(event)
            try:
                async for last in lease.mold.infer_stream(req):
                    if not (last.text or last.done):  # a progress report: the prompt's size
                        prompt = last.stats.prompt_eval_count if last.stats else prompt
                        continue
                    if last.text:
                        first = first or time.perf_counter_ns() - start
                        seen += 1
                        self.generated_tokens += 1
                    if last.done and last.stats is not None:
                        last.stats.load_duration = lease.load_duration
                        last.stats.total_duration = time.perf_counter_ns() - start
                        self.generated_tokens += last.stats.eval_count - seen  # exact at the end
                    yield last
            except BaseException as e:
                error = _why(e)
                raise
            finally:
                # Cut short (a disconnect, a timeout): what was used so far still counts.
                stats = (
                    last.stats if last.done else Stats(prompt_eval_count=prompt, eval_count=seen)
                )
                end = replace(event, stats=stats, first_token_ns=first, error=error)
                self.hooks.inference_ended(end)

    async def complete(
        self,
        model: str,
        req: GenerateRequest | ChatRequest,
        *,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
    ) -> Result:
        """The whole answer at once (the stream, collected: a timeout still counts the
        tokens made before it)."""
        return await collect(
            self.stream(model, req, keep_alive=keep_alive, load=load, priority=priority)
        )

    def _prepare(
        self, model: str, req: GenerateRequest | ChatRequest
    ) -> tuple[Manifest, str, InferenceEvent]:
        manifest = self.store.get(model)
        self.limits.options(req.options)
        self.limits.format(req.format)
        if isinstance(req, GenerateRequest):
            self.limits.template(req.template)
        if manifest.options:  # the model's defaults, under what the request sets
            req.options = InferenceOptions.model_validate(manifest.options).merged(req.options)
        task = "chat" if isinstance(req, ChatRequest) else "generate"
        event = InferenceEvent(manifest.name, task, current_request_id.get(), current_client.get())
        return manifest, task, event

    def generate_stream(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        raw: bool = False,
        format: Format = None,
        context: list[int] | None = None,
        options: InferenceOptions | dict[str, Any] | None = None,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a completion. Unless ``raw``, the model's chat template is applied;
        ``format`` ("json" or a JSON schema) constrains the output; ``context`` continues
        an earlier answer (its ``Result.context``)."""
        req = generate_request(
            prompt, system=system, raw=raw, format=format, context=context, options=options
        )
        return self.stream(model, req, keep_alive=keep_alive, load=load, priority=priority)

    def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        tools: list[dict[str, Any]] | None = None,
        format: Format = None,
        options: InferenceOptions | dict[str, Any] | None = None,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a chat reply rendered through the model's own chat template."""
        req = chat_request(messages, tools=tools, format=format, options=options)
        return self.stream(model, req, keep_alive=keep_alive, load=load, priority=priority)

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
        **request: Any,
    ) -> Result:
        """``generate_stream``'s answer in one piece; ``request`` takes the same keywords."""
        req = generate_request(prompt, **request)
        return await self.complete(model, req, keep_alive=keep_alive, load=load, priority=priority)

    async def chat(
        self,
        model: str,
        messages: Messages,
        *,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
        priority: int = 0,
        **request: Any,
    ) -> Result:
        """``chat_stream``'s answer in one piece; ``request`` takes the same keywords."""
        req = chat_request(messages, **request)
        return await self.complete(model, req, keep_alive=keep_alive, load=load, priority=priority)

    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
        load: LoadOptions | None = None,
    ) -> Result:
        """Embeddings, one vector per input text."""
        texts = [input] if isinstance(input, str) else list(input)
        self.limits.embed_inputs(texts)
        manifest = self.store.get(model)
        event = InferenceEvent(
            manifest.name, "embed", current_request_id.get(), current_client.get()
        )
        req = EmbedRequest(input=texts, truncate=truncate, max_tokens=self.limits.max_embed_tokens)
        start = time.perf_counter_ns()
        async with self._lease(manifest, load, keep_alive) as lease:
            _require(lease.mold, "embed")
            self.hooks.inference_started(event)
            try:
                result = await lease.mold.infer(req)
            except BaseException as e:
                self.hooks.inference_ended(replace(event, error=_why(e)))
                raise
        s = result.stats
        s.load_duration, s.total_duration = lease.load_duration, time.perf_counter_ns() - start
        self.hooks.inference_ended(replace(event, stats=s))
        return result

    async def tokenize(self, model: str, text: str) -> list[int]:
        async with self._lease(model) as lease:
            return await lease.mold.tokenize(text)

    async def detokenize(self, model: str, ids: Sequence[int]) -> str:
        async with self._lease(model) as lease:
            return await lease.mold.detokenize(ids)

    # -- store and devices -----------------------------------------------------------

    async def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        policy: PullPolicy | None = None,
        force: bool = False,
    ) -> Manifest:
        """Pull a catalog model, register a local file or folder, or download a URL, on the
        engine's pull threads. Cancelling the caller stops the pull; ``policy`` bounds what
        it may reach (the HTTP API passes its own); ``force`` lets a derived name replace a
        model from another source."""
        return await self.pulls.run(
            spec, name=name, sha256=sha256, progress=progress, policy=policy, force=force
        )

    def devices(self) -> list[Device]:
        return self.backends.devices()

    async def probe_devices(self) -> list[Device]:
        """``devices()`` on a thread of its own: runtimes probe slowly."""
        return await asyncio.get_running_loop().run_in_executor(self._probes, self.devices)


def _grows(manifest: Manifest, loaded: int, wanted: int) -> bool:
    """Whether ``wanted`` tokens of context exceed what is loaded and the model could hold."""
    trained = manifest.metadata.context_size
    return wanted > loaded and (trained is None or loaded < trained)


def _why(e: BaseException) -> str:
    if isinstance(e, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    return str(e) or type(e).__name__


def _require(mold: Mold, task: str) -> None:
    if task not in mold.tasks:
        raise UnsupportedTask(
            f"{mold.name} cannot {task}; it supports: {', '.join(sorted(mold.tasks))}"
        )


def _model_event(r: Runner, loaded: bool = True) -> ModelEvent:
    m = r.mold
    return ModelEvent(r.key, m.backend, m.device, m.memory, r.load_duration if loaded else 0)
