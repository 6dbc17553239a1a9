"""Rerank, in the shape llama-server, Jina and Cohere clients send: ``POST /v1/rerank``, and
llama-server's aliases ``/v1/reranking`` and ``/rerank``, plus ``/api/rerank`` beside
Ollama's routes (what ``RemoteEngine.rerank`` calls). One body, one answer everywhere."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from ..interface import KeepAlive
from ..schema import Body
from . import docs
from .common import engine_of, within

router = APIRouter(tags=["rerank"])


class Document(Body):
    """A document as Cohere and Jina also send it: an object with its ``text``."""

    text: str


class RerankBody(Body):
    model: str = Field(min_length=1)
    query: str
    documents: list[str | Document]
    top_n: int | None = None  # all of them when unset
    return_documents: bool = False
    keep_alive: KeepAlive = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


_OPENAI = docs.answers(docs.RerankAnswer, errors=docs.OPENAI_ERRORS)
_OLLAMA = docs.answers(docs.RerankAnswer)


@router.post("/v1/rerank", operation_id="rerank", responses=_OPENAI)
@router.post("/v1/reranking", operation_id="reranking", responses=_OPENAI)
@router.post("/rerank", operation_id="rerank_llama_server", responses=_OLLAMA)
@router.post("/api/rerank", operation_id="rerank_api", responses=_OLLAMA)
async def rerank(body: RerankBody, request: Request) -> dict[str, Any]:
    """The documents by relevance to the query, best first, the first ``top_n``: scored by
    a cross-encoder (its logits), or by an embedding model's cosine similarity."""
    texts = body.texts()
    timeout = request.app.state.settings.request_timeout
    ranking = await within(
        engine_of(request).rerank(
            body.model, body.query, texts, top_n=body.top_n, keep_alive=body.keep_alive
        ),
        timeout,
    )
    results = []
    for r in ranking.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if body.return_documents:
            item["document"] = {"text": r.document}
        results.append(item)
    n = ranking.stats.prompt_eval_count
    return {
        "id": f"rerank-{uuid.uuid4().hex[:24]}",
        "model": body.model,
        "object": "list",
        "results": results,
        "usage": {"prompt_tokens": n, "total_tokens": n},
        "scoring": ranking.scoring,
    }
