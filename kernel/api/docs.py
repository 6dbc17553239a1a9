"""What each route answers, for the OpenAPI schema: success bodies, stream items, errors and
links (a pull leads to show, copy and delete of what it stored).

These models document; the routes build their answers as plain dicts, so a documented
field the code does not send is a bug the fuzz test (``tests/test_api_fuzz.py``) catches by
validating every answer against these schemas.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ..interface import LoadedModel
from ..mold import Device
from ..store.manifest import Manifest


class OllamaError(BaseModel):
    error: str
    type: str | None = None  # a ForgeError's class, for the workbench's clients
    fields: dict[str, Any] | None = None  # and its fields (ModelNotFound.name, ...)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


def _errors(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    # JSON whatever the route's own answers are (text for /metrics)
    json = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    return {
        "4XX": {"model": model, "content": json, "description": "refused: the message says why"},
        "5XX": {"model": model, "content": json, "description": "failed (a download, a timeout)"},
    }


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


ERRORS = _errors(OllamaError)
OPENAI_ERRORS = _errors(OpenAIError)
ANTHROPIC_ERRORS = _errors(AnthropicError)

Reason = Literal["stop", "length", "cancel", "load", "unload"]


class _Timed(BaseModel):
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_cached: int | None = None  # prompt tokens a cached prefix held (batched models)
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateAnswer(_Timed):
    model: str
    created_at: str
    response: str
    done: bool
    done_reason: Reason | None = None
    context: list[int] | None = None


class ChatReply(BaseModel):
    role: Literal["assistant"]
    content: str
    tool_calls: list[dict[str, Any]] | None = None


class ChatAnswer(_Timed):
    model: str
    created_at: str
    message: ChatReply
    done: bool
    done_reason: Reason | None = None


class EmbedAnswer(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingAnswer(BaseModel):
    embedding: list[float]


class Details(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagsEntry(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class Tags(BaseModel):
    models: list[TagsEntry]


class ShowAnswer(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class PsEntry(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: Details
    expires_at: str
    size_vram: int
    context_length: int
    # not Ollama's: requests served at once, sequences running, KV cells (llama.cpp)
    slots: int = 1
    running: int = 0
    kv_used: int = 0
    kv_cached: int = 0
    kv_total: int = 0


class Ps(BaseModel):
    models: list[PsEntry]


class PullStatus(BaseModel):
    status: str
    model: str | None = None  # on the last one: the name the model is stored under
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class Version(BaseModel):
    version: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: Literal["ready", "loading"]
    loaded: int  # models loaded now (which ones: /api/ps, with a key)


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None  # when a cached prefix served


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None  # a reasoning model's thinking, as llama-server
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: Usage


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int


class AnthropicMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]  # text, thinking and tool_use blocks
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: AnthropicUsage


class TokenCount(BaseModel):
    input_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # base64 when asked


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int  # the document's place in the request
    relevance_score: float  # a cross-encoder's logit, or a cosine similarity
    document: RerankDocument | None = None  # with return_documents


class RerankAnswer(BaseModel):
    """llama-server's, Jina's and Cohere's shape, best first; ``scoring`` says how."""

    id: str
    model: str
    object: Literal["list"]
    results: list[RerankResult]
    usage: EmbeddingUsage
    scoring: Literal["cross-encoder", "cosine"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


def ndjson(item: type[BaseModel]) -> dict[str, Any]:
    """An NDJSON stream of ``item`` objects, documented as the array of its lines (the last
    may be an error, once the stream has begun)."""
    ref = {"$ref": f"#/components/schemas/{item.__name__}"}
    error = {"$ref": "#/components/schemas/OllamaError"}
    return {"application/x-ndjson": {"schema": {"type": "array", "items": {"anyOf": [ref, error]}}}}


SSE = {"text/event-stream": {"schema": {"type": "string"}}}  # data: lines, then [DONE]


def answers(
    model: Any,
    *,
    stream: dict[str, Any] | None = None,
    errors: dict[int | str, dict[str, Any]] = ERRORS,
    links: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: ``model`` as JSON, optionally a stream, its errors."""
    ok: dict[str, Any] = {"model": model, "description": "done"}
    if stream is not None:
        ok["content"] = stream
    if links:
        ok["links"] = links
    return {200: ok, **errors}


EMPTY: dict[int | str, dict[str, Any]] = {
    200: {"description": "done (no body)", "content": {}},
    **ERRORS,
}

# A pull's name feeds what a client does next (Ollama's clients show, copy, delete).
PULL_LINKS = {
    "ShowPulled": {"operationId": "show", "requestBody": {"model": "$response.body#/model"}},
    "CopyPulled": {
        "operationId": "copy",
        "requestBody": {"source": "$response.body#/model", "destination": "copy-of-pulled"},
    },
    "DeletePulled": {"operationId": "delete", "requestBody": {"model": "$response.body#/model"}},
}
COPY_LINKS = {
    "ShowCopy": {"operationId": "show", "requestBody": {"model": "$request.body#/destination"}},
    "DeleteCopy": {
        "operationId": "delete",
        "requestBody": {"model": "$request.body#/destination"},
    },
}

OPS = answers(Health)
READY: dict[int | str, dict[str, Any]] = {
    200: {"model": Ready, "description": "ready"},
    503: {"model": Ready, "description": "the preloads are still loading"},
    **ERRORS,
}
MANIFEST = answers(Manifest)
MANIFESTS = answers(list[Manifest])
LOADED = answers(LoadedModel)
LOADED_ALL = answers(list[LoadedModel])
DEVICES = answers(list[Device])


class Tokens(BaseModel):
    model: str
    tokens: list[int]


class Text(BaseModel):
    model: str
    text: str


TOKENS = answers(Tokens)
TEXT = answers(Text)


class Unloaded(BaseModel):
    model: str
    unloaded: bool


UNLOADED = answers(Unloaded)
