"""The null backend: a pure-Python Mold with no runtime behind it, for tests and demos.

A manifest of format ``null`` configures it through ``metadata.extra``: ``reply`` (text to
answer; default: echo the prompt), ``token_delay`` and ``load_delay`` (seconds), ``memory``
(bytes), ``dims`` (embedding size), ``fail_load`` (error message), ``fail_after`` (raise
InferenceError after that many tokens), ``echo_prompt`` (answer a chat with the prompt its
``metadata.chat_template`` renders).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator, Sequence

from ..chat_template import render_chat
from ..devices import cpu_device
from ..errors import InferenceError, InvalidModelFile, UnsupportedTask
from ..limits import check_embed_tokens
from ..mold import Device, LoadOptions, Mold, Occupancy
from ..schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    GenerateRequest,
    Request,
    RerankRequest,
    Result,
    Stats,
    collect,
)
from ..store.manifest import Manifest
from ..tensors import TensorRequest
from .stops import StopMatcher


class NullBackend:
    name = "null"
    formats = frozenset({"null"})

    def available(self) -> bool:
        return True

    def devices(self) -> list[Device]:
        return [cpu_device(self.name)]

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.metadata.extra.get("memory", 1 << 20))

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        return NullMold(manifest, device, self.estimate_memory(manifest, opts), opts.parallel or 1)


class NullMold:
    backend = "null"
    tasks = frozenset({"generate", "chat", "embed", "tokenize", "batch"})  # async: any number

    def __init__(self, manifest: Manifest, device: Device, memory: int, slots: int = 1) -> None:
        self.name, self.slots = manifest.name, slots
        self.device = device.id
        self.metadata = manifest.metadata
        self.memory = memory
        self.context_length = manifest.metadata.context_size or 2048
        self._extra = manifest.metadata.extra
        self._loaded = False

    async def load(self) -> None:
        await asyncio.sleep(float(self._extra.get("load_delay", 0)))
        if msg := self._extra.get("fail_load"):
            raise InvalidModelFile(str(msg))
        if self._extra.get("abort_load"):  # a native crash, as llama.cpp's aborts are
            os.abort()
        self._loaded = True

    async def unload(self) -> None:
        self._loaded = False

    async def infer(self, req: Request) -> Result:
        if isinstance(req, EmbedRequest):
            dims = int(self._extra.get("dims", 8))
            count = sum(len(t.split()) for t in req.input)
            check_embed_tokens(count, req.max_tokens)
            return Result(
                embeddings=[_vector(t, dims) for t in req.input],
                stats=Stats(prompt_eval_count=count),
            )
        if isinstance(req, RerankRequest):  # the engine reranks with its embeddings instead
            raise UnsupportedTask(f"{self.name} is not a cross-encoder")
        if isinstance(req, TensorRequest):
            raise UnsupportedTask(f"{self.name} does not take tensors")
        return await collect(self.infer_stream(req))

    async def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        if isinstance(req, GenerateRequest):
            prompt = req.prompt
        elif isinstance(req, ChatRequest) and self._extra.get("echo_prompt"):
            template = self.metadata.chat_template or ""
            prompt = render_chat(template, req.messages, req.tools, req.think)
        elif isinstance(req, ChatRequest):
            prompt = req.messages[-1].content if req.messages else ""
        else:
            raise UnsupportedTask("infer_stream takes a generate or chat request")
        start = time.perf_counter_ns()
        words = str(self._extra.get("reply", prompt)).split()
        limit = req.options.max_tokens
        delay = float(self._extra.get("token_delay", 0))
        matcher = StopMatcher(req.options.stop)
        count, reason = 0, "stop"
        fail_after = self._extra.get("fail_after")
        for word in words:
            if limit is not None and 0 <= limit <= count:
                reason = "length"
                break
            if fail_after is not None and count >= int(fail_after):
                raise InferenceError(f"null model failed after {count} tokens, as configured")
            await asyncio.sleep(delay)
            count += 1
            if text := matcher.feed(word + " "):
                yield Chunk(text)
            if matcher.stopped:
                break
        if tail := matcher.flush():
            yield Chunk(tail)
        took = time.perf_counter_ns() - start
        stats = Stats(len(prompt.split()), 0, count, took)
        last = Chunk(done=True, done_reason=reason, stats=stats)  # type: ignore[arg-type]
        last.stop_sequence = matcher.hit
        yield last

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        return list(text.encode())

    async def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode(errors="replace")

    def occupancy(self) -> Occupancy:
        return Occupancy(self.slots)


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [digest[i % len(digest)] - 127.5 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
