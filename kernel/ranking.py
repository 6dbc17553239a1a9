"""What a rerank answers: documents ordered by relevance to a query, and how they were scored.

A cross-encoder scores each (query, document) pair itself (``"cross-encoder"``: its logits,
unbounded, as llama-server returns them); an embedding model scores a document by the cosine
similarity of its embedding to the query's (``"cosine"``, in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .schema import Stats

Scoring = Literal["cross-encoder", "cosine"]


@dataclass(frozen=True, slots=True)
class Ranked:
    """One document: its place in the request, its score and its text."""

    index: int
    score: float
    document: str


@dataclass(slots=True)
class Ranking:
    """Documents best first, cut to ``top_n``; ``stats`` counts every document's tokens."""

    results: list[Ranked]
    scoring: Scoring
    stats: Stats = field(default_factory=Stats)


def ranked(scores: Sequence[float], documents: Sequence[str], top_n: int | None) -> list[Ranked]:
    """The documents by score, highest first (ties keep their order), the first ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [Ranked(i, scores[i], documents[i]) for i in order[:top_n]]


def cosine_scores(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """Each vector's cosine similarity to ``query`` (0 against a zero vector)."""
    q = math.sqrt(sum(x * x for x in query))
    scores = []
    for v in vectors:
        norm = q * math.sqrt(sum(x * x for x in v))
        scores.append(sum(a * b for a, b in zip(query, v, strict=True)) / norm if norm else 0.0)
    return scores
