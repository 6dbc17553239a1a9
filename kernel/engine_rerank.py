"""The engine's rerank: documents ordered by relevance to a query. A cross-encoder (a Mold
with the ``rerank`` task) scores the pairs itself; any embedding model scores them by cosine
similarity. Requests hold their model through the same lease as embeddings, so access,
quotas, limits and hooks apply alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .engine_inference import EngineMixin
from .errors import UnsupportedTask
from .interface import KeepAlive
from .mold import Mold
from .ranking import Ranking, Scoring, cosine_scores, ranked
from .schema import EmbedRequest, RerankRequest, Result


class EngineRerank(EngineMixin):
    """Rerank, mixed into ``AsyncEngine``."""

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> Ranking:
        """``documents`` by relevance to ``query``, best first, the first ``top_n`` (all when
        None): scored by a cross-encoder, or by an embedding model's cosine similarity;
        ``Ranking.scoring`` says which."""
        docs = list(documents)
        self.limits.rerank_documents(docs, top_n)
        scorings: list[Scoring] = []  # how the leased model scores, once it is known

        def begin(mold: Mold) -> Callable[[], Awaitable[Result]]:
            scorings.append(_scoring(mold))
            return lambda: self._scores(mold, scorings[0], query, docs)

        result = await self._observed(self.store.get(model), "rerank", keep_alive, begin)
        return Ranking(ranked(result.scores, docs, top_n), scorings[0], result.stats)

    async def _scores(self, mold: Mold, scoring: Scoring, query: str, docs: list[str]) -> Result:
        """A Result whose ``scores`` hold one score per document."""
        most = self.limits.max_embed_tokens
        if scoring == "cross-encoder":
            return await mold.infer(RerankRequest(query=query, documents=docs, max_tokens=most))
        texts = [query, *docs]
        self.limits.embed_inputs(texts)
        result = await mold.infer(EmbedRequest(input=texts, max_tokens=most))
        result.scores = cosine_scores(result.embeddings[0], result.embeddings[1:])
        result.embeddings = []
        return result


def _scoring(mold: Mold) -> Scoring:
    if "rerank" in mold.tasks:
        return "cross-encoder"
    if "embed" in mold.tasks:
        return "cosine"
    raise UnsupportedTask(
        f"{mold.name} cannot rerank: it is neither a cross-encoder nor an embedding model "
        f"(it supports: {', '.join(sorted(mold.tasks))})"
    )
