"""The llama.cpp backend: GGUF models through llama-cpp-python (extra ``llama``).

The async Mold here drives a blocking ``LlamaRuntime`` on one dedicated Worker thread, so
every call on an instance, a whole stream included, is serialized on the thread llama.cpp
wants (DESIGN.md §6).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from ..devices import cpu_device
from ..errors import MissingExtra, ModelNotLoaded, UnsupportedTask
from ..mold import Device, LoadOptions, Mold, Occupancy
from ..schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    GenerateRequest,
    Message,
    Request,
    RerankRequest,
    Result,
    Stats,
)
from ..store.manifest import Manifest
from ..tensors import TensorRequest
from ..worker import Worker
from .embed_batch import EmbedBatcher
from .templates import render_go_template

if TYPE_CHECKING:
    from .llama_batch import Batcher
    from .llama_runtime import LlamaRuntime

log = logging.getLogger(__name__)
PARALLEL = 4  # sequences at once unless set: llama-server's default
_OVERHEAD = 32 << 20  # compute buffers and the like, beyond weights and KV cache


class LlamaCppBackend:
    name = "llama_cpp"
    formats = frozenset({"gguf"})

    def available(self) -> bool:
        return importlib.util.find_spec("llama_cpp") is not None

    def devices(self) -> list[Device]:
        if not self.available():
            return []
        from .ggml_devices import ggml_devices

        found = ggml_devices(self.name)
        if not any(d.id == "cpu" for d in found):  # a GPU-only build still runs on the host
            found.insert(0, cpu_device(self.name))
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        """Weights, an f16 KV cache for the context that will be allocated, and the compute
        buffer (logits for a 512-token batch dominate it). Measured after the load; the
        embedding context, made on the first embed, is measured and added then."""
        extra = manifest.metadata.extra
        n_ctx = _context(manifest, opts)
        layers = int(extra.get("block_count") or 0)
        embd = int(extra.get("embedding_length") or 0)
        heads = int(extra.get("head_count") or 1)
        kv_heads = int(extra.get("head_count_kv") or heads)
        kv = 2 * 2 * n_ctx * layers * (embd * kv_heads // max(heads, 1))
        compute = 512 * 4 * int(extra.get("vocab_size") or 0)
        return manifest.size + kv + compute + _OVERHEAD

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("llama-cpp-python", "llama")
        memory = self.estimate_memory(manifest, opts)
        if device.id != "cpu":  # the weights' copy on the device, beside the mapped file
            memory += manifest.size
        return LlamaCppMold(manifest, device, opts, memory)


def _context(manifest: Manifest, opts: LoadOptions) -> int:
    trained = manifest.metadata.context_size
    wanted = opts.num_ctx or 4096
    return min(wanted, trained) if trained else wanted


class LlamaCppMold:
    backend = "llama_cpp"

    def __init__(self, manifest: Manifest, device: Device, opts: LoadOptions, memory: int):
        self.name = manifest.name
        self.device = device.id
        self.metadata = manifest.metadata
        self.memory = memory
        self.context_length = _context(manifest, opts)
        self._path = manifest.path
        self._opts = opts
        self._runtime: LlamaRuntime | None = None
        self._worker: Worker | None = None
        self._batcher: Batcher | None = None  # with parallel > 1: continuous batching
        self._gather: EmbedBatcher | None = None  # concurrent embeddings in one pass
        self._parallel = opts.parallel or PARALLEL
        self.tasks = frozenset({"embed", "tokenize"})

    async def load(self) -> None:
        from .llama_runtime import LlamaRuntime

        gpu = self.device != "cpu"
        layers = self._opts.gpu_layers if self._opts.gpu_layers is not None else -1
        if not gpu and self._opts.gpu_layers:
            log.warning("%s runs on cpu: gpu_layers=%d is ignored", self.name, layers)
        parallel = self._parallel
        worker = self._worker = Worker(f"llama:{self.name}")
        try:
            rt = self._runtime = await worker.call(
                lambda: LlamaRuntime(
                    self._path,
                    n_ctx=self.context_length,
                    threads=self._opts.threads or os.cpu_count() or 1,
                    gpu_layers=layers if gpu else 0,
                    main_gpu=int(self.device.split(":")[1]) if gpu else -1,
                    max_grammar_bytes=self._opts.settings.max_grammar_bytes,
                    batched=parallel > 1,
                )
            )
            if parallel > 1 and not rt.embed_only:
                # as many ids again for the prompts of finished requests, kept for reuse
                self._batcher = b = await worker.call(rt.batcher, worker, 2 * parallel)
                b.max_unread = self._opts.settings.stream_buffer
                b.stall_after = self._opts.settings.send_timeout
            wait = self._opts.settings.embed_batch_wait if parallel > 1 else 0.0
            self._gather = EmbedBatcher(worker, rt.embed_many, wait)
        except BaseException:
            if self._runtime is not None:
                await worker.call(self._runtime.close)
            self._runtime = None
            worker.close()
            self._worker = None
            raise
        self.context_length = rt.n_ctx
        self._measure(rt)
        if not rt.embed_only:
            self.tasks = self.tasks | {"generate"} | ({"chat"} if rt.template else set())
        if parallel > 1:
            self.tasks = self.tasks | {"batch"}

    def _measure(self, rt: LlamaRuntime) -> None:
        """What the scheduler's budget counts: the mapped file and every context's buffers
        (llama.cpp's own figures; the estimate stays if it said none)."""
        if rt.held_bytes:
            self.memory = self.metadata.size + rt.held_bytes

    async def unload(self) -> None:
        rt, worker, batcher, gather = self._runtime, self._worker, self._batcher, self._gather
        self._runtime = self._worker = self._batcher = self._gather = None
        if gather is not None:
            await gather.close()
        if rt is not None and worker is not None:
            if batcher is not None:
                await worker.call(batcher.close)  # its context goes before the model
            await worker.call(rt.close)
            await worker.stop()

    def _live(self) -> tuple[LlamaRuntime, Worker]:
        if self._runtime is None or self._worker is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        return self._runtime, self._worker

    def _prompt(self, rt: LlamaRuntime, req: GenerateRequest | ChatRequest) -> str:
        if isinstance(req, ChatRequest):
            return rt.render(req.messages, req.tools, req.think)
        if req.raw:
            return req.prompt
        if req.template is not None:
            return render_go_template(
                req.template, System=req.system or "", Prompt=req.prompt, Response=""
            )
        if rt.template:  # Ollama's generate: the prompt goes through the template
            msgs = [Message(role="system", content=req.system)] if req.system else []
            return rt.render([*msgs, Message(role="user", content=req.prompt)], think=req.think)
        return f"{req.system}\n\n{req.prompt}" if req.system else req.prompt

    def _generation(
        self, rt: LlamaRuntime, req: GenerateRequest | ChatRequest
    ) -> Callable[[threading.Event], Iterator[Chunk]]:
        prefix = req.context or () if isinstance(req, GenerateRequest) else ()
        return lambda cancel: rt.generate(
            self._prompt(rt, req), req.options, cancel, prefix=prefix, fmt=req.format
        )

    async def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        rt, worker = self._live()
        if isinstance(req, EmbedRequest):
            raise UnsupportedTask("infer_stream takes a generate or chat request")
        if self._batcher is not None:
            async for chunk in self._batched(rt, self._batcher, req):
                yield chunk
            return
        async for chunk in worker.stream(self._generation(rt, req)):
            yield chunk

    async def _batched(
        self, rt: LlamaRuntime, batcher: Batcher, req: GenerateRequest | ChatRequest
    ) -> AsyncIterator[Chunk]:
        prefix = req.context or () if isinstance(req, GenerateRequest) else ()
        n_ctx = req.options.num_ctx

        # Here, not on the worker: between two decode steps it would wait for the step in
        # flight, and the vocabulary and grammar parsing touch no context (no OpenMP).
        tokens = rt.prompt_tokens(self._prompt(rt, req), prefix, n_ctx)
        grammar = rt.grammar_text(req.format)
        async with contextlib.aclosing(batcher.stream(tokens, req.options, grammar, n_ctx)) as s:
            async for chunk in s:
                yield chunk

    async def infer(self, req: Request) -> Result:
        rt, worker = self._live()
        if isinstance(req, EmbedRequest):
            if self._gather is None:  # unloaded since _live()
                raise ModelNotLoaded(f"{self.name} is not loaded")
            vectors, count = await self._gather.embed(req.input, req.truncate, req.max_tokens)
            self._measure(rt)  # the first embed made a second context: it counts from now
            return Result(embeddings=vectors, stats=Stats(prompt_eval_count=count))
        if isinstance(req, RerankRequest):  # the engine reranks with its embeddings instead
            raise UnsupportedTask(f"{self.name} is not a cross-encoder")
        if isinstance(req, TensorRequest):
            raise UnsupportedTask(f"{self.name} does not take tensors")
        if self._batcher is not None:
            chunks = [c async for c in self.infer_stream(req) if c.text or c.done]
        else:
            chunks = await worker.collect(self._generation(rt, req))  # no per-token hand-offs
        last = chunks[-1]
        text = "".join(c.text for c in chunks)
        return Result(
            text, done_reason=last.done_reason, stats=last.stats or Stats(), context=last.context
        )

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        rt, worker = self._live()
        if prompt:  # as a prompt is read (a BOS added), whatever its length
            return await worker.call(rt.prompt_tokens, text, (), 1 << 40)
        return await worker.call(rt.tokenize, text)

    def occupancy(self) -> Occupancy:
        b, g = self._batcher, self._gather
        now = Occupancy(self._parallel) if b is None else b.occupancy(self._parallel)
        if g is not None:  # embeddings: their passes count as batches too
            now.running += g.running
            now.batches += g.batches
            for width, n in g.widths.items():
                now.widths[width] = now.widths.get(width, 0) + n
        return now

    async def detokenize(self, ids: Sequence[int]) -> str:
        rt, worker = self._live()
        return await worker.call(rt.detokenize, list(ids))
