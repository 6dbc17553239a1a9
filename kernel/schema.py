"""Typed records shared by the engine, the backends and the API (seed §3).

Requests are pydantic models (they arrive from users); Chunk, Stats and Result are
plain dataclasses because one is built per generated token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .tensors import TensorRequest, TensorSpec

log = logging.getLogger(__name__)


class ModelRequirements(BaseModel):
    min_memory: int | None = None
    min_vram: int | None = None
    cpu_cores: int | None = None
    gpu_required: bool = False
    gpu_compute_capability: str | None = None


class ModelMetadata(BaseModel):
    """What is known about a model file, read from its header (seed §3.1)."""

    name: str = ""
    version: str = ""
    model_type: Literal["llm", "embedding", "other"] = "other"
    format: str = ""
    size: int = 0
    parameters: int | None = None
    quantization: str | None = None
    architecture: str = ""
    context_size: int | None = None
    # A tensor model's inputs and outputs (the ``infer`` task), read from the model at pull
    input_shapes: list[TensorSpec] = Field(default_factory=list)
    output_shapes: list[TensorSpec] = Field(default_factory=list)
    requirements: ModelRequirements = Field(default_factory=ModelRequirements)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    license: str | None = None
    author: str | None = None
    chat_template: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


_OPTION_ALIASES = {"num_predict": "max_tokens", "repeat_penalty": "repetition_penalty"}


class InferenceOptions(BaseModel):
    """Sampling and context options (seed §3.2). Ollama's spellings are accepted too, and a
    ``null`` value means "not set", as Ollama reads it (LangChain sends ``"stop": null``)."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=-2)  # -1: no limit; -2: fill the context
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    repetition_penalty: float | None = Field(None, gt=0)
    num_ctx: int | None = Field(None, ge=16)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {_OPTION_ALIASES.get(k, k): v for k, v in data.items() if v is not None}
        if isinstance(data.get("stop"), str):
            data["stop"] = [data["stop"]]
        unknown = set(data) - set(cls.model_fields)
        if unknown:  # names as repr, a few: a request cannot write lines into the log
            names = sorted(repr(k)[:40] for k in unknown)
            log.warning("ignoring unknown options: %s", ", ".join(names[:8]))
        return data

    def merged(self, other: InferenceOptions | None) -> InferenceOptions:
        """These options with every field that ``other`` sets (to a value) laid over them."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_unset=True, exclude_none=True))


class Body(BaseModel):
    """A request body as clients send it: unknown fields are ignored, and ``null`` means
    "not set", so the field's default applies (Ollama's Go structs and OpenAI read both so)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class Message(BaseModel):
    """One chat message. ``tool_calls`` are Ollama's shape (``{"function": {"name",
    "arguments"}}``, arguments a dict); a ``tool`` message answers one, named by
    ``tool_name`` (Ollama) or ``tool_call_id`` (OpenAI, Anthropic)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


Format = Literal["json"] | dict[str, Any] | None  # "json", or a JSON schema the output obeys


class GenerateRequest(BaseModel):
    """A completion. Unless ``raw``, the prompt goes through the chat template (or
    ``template``, an Ollama-style override); ``context`` continues an earlier answer."""

    prompt: str
    system: str | None = None
    raw: bool = False
    template: str | None = None
    context: list[int] | None = None
    format: Format = None
    think: bool | None = None
    options: InferenceOptions = Field(default_factory=InferenceOptions)


class ChatRequest(BaseModel):
    """Chat, rendered through the model's own chat template (with ``tools`` if given).
    ``think`` asks a reasoning model to think (true) or not (false, where its template
    can); None leaves it to the template. ``tool_choice`` is "auto" (the default), "none",
    "required" or a tool's name: the last two force a call through the output grammar."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    format: Format = None
    think: bool | None = None
    options: InferenceOptions = Field(default_factory=InferenceOptions)


class EmbedRequest(BaseModel):
    input: list[str]
    truncate: bool = True
    max_tokens: int | None = None  # the most tokens all inputs may hold together
    options: InferenceOptions = Field(default_factory=InferenceOptions)


class RerankRequest(BaseModel):
    """(query, document) pairs for a cross-encoder (a Mold with the ``rerank`` task)."""

    query: str
    documents: list[str]
    max_tokens: int | None = None  # the most tokens all pairs may hold together


Request = GenerateRequest | ChatRequest | EmbedRequest | RerankRequest | TensorRequest

DoneReason = Literal["stop", "length", "cancel"]


@dataclass(slots=True)
class Stats:
    """Token counts and durations in integer nanoseconds, as Ollama reports them."""

    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    prompt_cached: int = 0  # prompt tokens a cached prefix held: not in prompt_eval_count

    @property
    def tokens_per_second(self) -> float:
        return self.eval_count / (self.eval_duration / 1e9) if self.eval_duration else 0.0


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of the tool call numbered ``index`` in a reply: its first piece names it,
    the next ones carry its arguments as JSON text, piece by piece, and its last one holds
    the whole call in Ollama's shape (``{"function": {"name", "arguments"}}``)."""

    index: int
    name: str = ""
    arguments: str = ""
    call: dict[str, Any] | None = None


@dataclass(slots=True)
class Chunk:
    """One piece of a stream. The last one has ``done=True``, a done_reason and stats.

    A runtime may also send a chunk with no text and ``done=False`` whose stats hold the
    prompt's token count once it is known: the engine keeps it (so a stream cut short still
    counts its prompt) and passes nothing on.
    """

    text: str = ""
    done: bool = False
    done_reason: DoneReason | None = None
    stats: Stats | None = None
    context: list[int] | None = None  # on the last chunk: prompt and answer tokens
    # On the last chunk of a chat with tools: the calls in the whole answer, in Ollama's
    # shape ({"function": {"name", "arguments"}}); ``call`` chunks carried them piece by piece.
    tool_calls: list[dict[str, Any]] | None = None
    thinking: str = ""  # reasoning, split from the answer text by the model's template
    call: ToolCallDelta | None = None
    stop_sequence: str | None = None  # on the last chunk: the stop sequence that ended it


@dataclass(slots=True)
class Result:
    """A whole answer. With tool calls, ``text`` is the answer without their blocks."""

    text: str = ""
    embeddings: list[list[float]] = field(default_factory=list)
    done_reason: DoneReason | None = None
    stats: Stats = field(default_factory=Stats)
    context: list[int] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    scores: list[float] = field(default_factory=list)  # a cross-encoder's, one per document
    thinking: str = ""
    stop_sequence: str | None = None  # the stop sequence that ended the answer
    tensors: dict[str, Any] = field(default_factory=dict)  # infer's outputs, numpy arrays


async def collect(stream: AsyncIterator[Chunk]) -> Result:
    """Drain a chunk stream into one Result."""
    chunks = [c async for c in stream]
    return result_of(chunks)


def result_of(chunks: Sequence[Chunk]) -> Result:
    """The Result a stream of ``chunks`` adds up to (the last one done)."""
    last = chunks[-1] if chunks else Chunk()
    calls = [c.call.call for c in chunks if c.call is not None and c.call.call is not None]
    text = "".join(c.text for c in chunks)
    return Result(
        text.strip() if calls else text,
        done_reason=last.done_reason,
        stats=last.stats or Stats(),
        context=last.context,
        tool_calls=calls or last.tool_calls,
        thinking="".join(c.thinking for c in chunks),
        stop_sequence=last.stop_sequence,
    )


def options_of(options: InferenceOptions | Mapping[str, Any] | None) -> InferenceOptions:
    """Options from the engine's ``options=`` keyword. Unlike an HTTP body (where Ollama's
    clients send options this engine does not have, and they are logged and ignored), a
    name the engine does not know raises here: a typo must not pass silently."""
    if isinstance(options, InferenceOptions):
        return options
    unknown = sorted(
        str(k)
        for k in options or {}
        if k not in InferenceOptions.model_fields and k not in _OPTION_ALIASES
    )
    if unknown:
        known = sorted({*InferenceOptions.model_fields, *_OPTION_ALIASES})
        raise TypeError(f"unknown option {unknown[0]!r}; known: {', '.join(known)}")
    return InferenceOptions.model_validate(dict(options or {}))


def generate_request(
    prompt: str,
    *,
    system: str | None = None,
    raw: bool = False,
    format: Format = None,
    context: list[int] | None = None,
    options: InferenceOptions | Mapping[str, Any] | None = None,
    think: bool | None = None,
) -> GenerateRequest:
    """A GenerateRequest from the engine's keywords (``generate``, ``generate_stream``)."""
    return GenerateRequest(
        prompt=prompt,
        system=system,
        raw=raw,
        format=format,
        context=context,
        think=think,
        options=options_of(options),
    )


def chat_request(
    messages: Sequence[Message | Mapping[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    format: Format = None,
    options: InferenceOptions | Mapping[str, Any] | None = None,
    think: bool | None = None,
) -> ChatRequest:
    """A ChatRequest from the engine's keywords (``chat``, ``chat_stream``)."""
    msgs = [m if isinstance(m, Message) else Message(**m) for m in messages]
    return ChatRequest(
        messages=msgs, tools=tools, format=format, think=think, options=options_of(options)
    )
