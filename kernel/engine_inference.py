"""The engine's inference methods: streams and whole answers for generate and chat,
embeddings and tokens. Every request holds its model through one lease, and the hooks
(metrics, traces, plugins) see each one start and end, cut short or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .chat_template import render_chat
from .errors import RequestError, UnsupportedTask
from .hooks import Hooks, InferenceEvent, current_client, current_request_id
from .interface import KeepAlive, Messages, Options
from .limits import Limits
from .mold import LoadOptions, Mold
from .replies import ReplyParser, reply_format
from .scheduler import Lease
from .schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    Format,
    GenerateRequest,
    InferenceOptions,
    Result,
    Stats,
    chat_request,
    collect,
    generate_request,
)
from .store.manifest import Manifest
from .store.store import Store


class EngineMixin:
    """What ``AsyncEngine`` supplies to the mixins its methods come from: the store,
    limits, hooks and ``_lease``."""

    store: Store
    limits: Limits
    hooks: Hooks

    if TYPE_CHECKING:

        def _lease(
            self,
            model: str | Manifest,
            wanted: LoadOptions | None = None,
            keep_alive: KeepAlive = None,
            options: InferenceOptions | None = None,
            priority: int = 0,
        ) -> AbstractAsyncContextManager[Lease]: ...

    async def _observed(
        self,
        manifest: Manifest,
        task: str,
        keep_alive: KeepAlive,
        begin: Callable[[Mold], Callable[[], Awaitable[Result]]],
    ) -> Result:
        """One whole-answer request (embed, rerank, infer) on a leased model: ``begin``
        checks the Mold (what it raises, the hooks never hear of) and gives the work; the
        hooks see the work start and end, and the Result gets its durations."""
        event = InferenceEvent(manifest.name, task, current_request_id.get(), current_client.get())
        start = time.perf_counter_ns()
        async with self._lease(manifest, None, keep_alive) as lease:
            work = begin(lease.mold)
            self.hooks.inference_started(event)
            try:
                result = await work()
            except BaseException as e:
                self.hooks.inference_ended(replace(event, error=_why(e)))
                raise
        s = result.stats
        s.load_duration, s.total_duration = lease.load_duration, time.perf_counter_ns() - start
        self.hooks.inference_ended(replace(event, stats=s))
        return result


class EngineInference(EngineMixin):
    """Generation, chat, embeddings and tokens, mixed into ``AsyncEngine``."""

    generated_tokens: int

    async def stream(
        self,
        model: str,
        req: GenerateRequest | ChatRequest,
        *,
        keep_alive: KeepAlive = None,
        priority: int = 0,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to a full request record (what the HTTP API builds). Where the
        model's template marks thinking or tool calls, chunks carry them apart from the
        answer text (``thinking``, ``call``); with ``tools``, the last chunk lists the calls."""
        start = time.perf_counter_ns()
        manifest, task, event = self._prepare(model, req)
        parser = _parser(manifest, req)
        first, last, error = 0, Chunk(), None
        prompt = seen = 0
        async with self._lease(manifest, None, keep_alive, req.options, priority) as lease:
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
                    if parser is None:
                        yield last
                        continue
                    for piece in parser.feed(last.text):
                        yield piece
                    if last.done:
                        for piece in parser.close():
                            yield piece
                        last.text, last.tool_calls = "", parser.calls or None
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
        priority: int = 0,
    ) -> Result:
        """The whole answer at once (the stream, collected: a timeout still counts the
        tokens made before it)."""
        return await collect(self.stream(model, req, keep_alive=keep_alive, priority=priority))

    def _prepare(
        self, model: str, req: GenerateRequest | ChatRequest
    ) -> tuple[Manifest, str, InferenceEvent]:
        manifest = self.store.get(model)
        self.limits.options(req.options)
        self.limits.format(req.format)
        if isinstance(req, GenerateRequest):
            self.limits.template(req.template)
        if req.think and reply_format(manifest.metadata.chat_template).think is None:
            raise UnsupportedTask(f"{manifest.name} does not support thinking")
        if isinstance(req, ChatRequest):
            forced_calls(req)
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
        think: bool | None = None,
        context: list[int] | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a completion. Unless ``raw``, the model's chat template is applied;
        ``format`` ("json" or a JSON schema) constrains the output; ``context`` continues
        an earlier answer (its ``Result.context``); ``think`` turns a reasoning model's
        thinking on or off (``Result.thinking``, ``Chunk.thinking``)."""
        req = generate_request(
            prompt,
            system=system,
            raw=raw,
            format=format,
            context=context,
            options=options,
            think=think,
        )
        return self.stream(model, req, keep_alive=keep_alive)

    def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        tools: list[dict[str, Any]] | None = None,
        format: Format = None,
        think: bool | None = None,
        options: Options = None,
        keep_alive: KeepAlive = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a chat reply rendered through the model's own chat template."""
        req = chat_request(messages, tools=tools, format=format, options=options, think=think)
        return self.stream(model, req, keep_alive=keep_alive)

    async def generate(self, model: str, prompt: str, **kw: Any) -> Result:
        """``generate_stream``'s answer in one piece; it takes the same keywords."""
        return await collect(self.generate_stream(model, prompt, **kw))

    async def chat(self, model: str, messages: Messages, **kw: Any) -> Result:
        """``chat_stream``'s answer in one piece, tool calls parsed (``Result.tool_calls``)."""
        return await collect(self.chat_stream(model, messages, **kw))

    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool = True,
        keep_alive: KeepAlive = None,
    ) -> Result:
        """Embeddings, one vector per input text."""
        texts = [input] if isinstance(input, str) else list(input)
        self.limits.embed_inputs(texts)
        req = EmbedRequest(input=texts, truncate=truncate, max_tokens=self.limits.max_embed_tokens)

        def begin(mold: Mold) -> Callable[[], Awaitable[Result]]:
            _require(mold, "embed")
            return lambda: mold.infer(req)

        return await self._observed(self.store.get(model), "embed", keep_alive, begin)

    async def count_tokens(self, model: str, req: ChatRequest) -> int:
        """How many tokens ``req``'s prompt takes: rendered through the model's chat
        template (its messages' text, joined, when it has none), then tokenized."""
        manifest = self.store.get(model)
        self.limits.options(req.options)
        if template := manifest.metadata.chat_template:
            prompt = render_chat(template, req.messages, req.tools, req.think)
        else:
            prompt = "\n".join(m.content for m in req.messages)
        async with self._lease(manifest) as lease:
            return len(await lease.mold.tokenize(prompt, prompt=True))

    async def tokenize(self, model: str, text: str) -> list[int]:
        async with self._lease(model) as lease:
            return await lease.mold.tokenize(text)

    async def detokenize(self, model: str, ids: Sequence[int]) -> str:
        async with self._lease(model) as lease:
            return await lease.mold.detokenize(ids)


def _why(e: BaseException) -> str:
    if isinstance(e, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    return str(e) or type(e).__name__


def _require(mold: Mold, task: str) -> None:
    if task not in mold.tasks:
        raise UnsupportedTask(
            f"{mold.name} cannot {task}; it supports: {', '.join(sorted(mold.tasks))}"
        )


def _parser(manifest: Manifest, req: GenerateRequest | ChatRequest) -> ReplyParser | None:
    """What splits this request's reply, when its model's template marks anything in it."""
    if isinstance(req, GenerateRequest) and (req.raw or req.template is not None):
        return None
    fmt = reply_format(manifest.metadata.chat_template)
    tools = isinstance(req, ChatRequest) and bool(req.tools)
    if fmt.think is None and not tools:
        return None
    forced = isinstance(req, ChatRequest) and req.tool_choice not in (None, "auto")
    return ReplyParser(fmt, tools=tools, think=req.think, forced=forced)


def forced_calls(req: ChatRequest) -> None:
    """Apply ``tool_choice``: "none" hides the tools; "required" or a tool's name makes
    the output one call object, through a JSON schema the sampler's grammar enforces."""
    choice = req.tool_choice
    if choice in (None, "auto") or not req.tools:
        req.tool_choice = None
        return
    if choice == "none":
        req.tools, req.tool_choice = None, None
        return
    options = []
    for tool in req.tools:
        fn = tool.get("function", tool)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestError("each tool needs a function with a name")
        if choice in ("required", fn["name"]):
            params = fn.get("parameters") or {"type": "object"}
            options.append(
                {
                    "type": "object",
                    "properties": {"name": {"const": fn["name"]}, "arguments": params},
                    "required": ["name", "arguments"],
                }
            )
    if not options:
        raise RequestError(f"tool_choice names {choice!r}, which is not among the tools")
    if req.format is not None:
        raise RequestError("a forced tool call and a response format cannot both shape the output")
    req.format = options[0] if len(options) == 1 else {"anyOf": options}
