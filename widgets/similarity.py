"""How alike answers are, for ``Compare``: no dependencies, or a model's embeddings.

Without an embedding model the score is the cosine of word-count vectors (lower-cased
words and numbers): 1.0 for the same words in any order, 0.0 for no word in common. With
one it is the cosine of the model's embeddings. Either way, for more than two answers it
is the mean over all pairs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from ..interface import EngineClient

_WORD = re.compile(r"\w+")


def word_cosine(a: str, b: str) -> float:
    """The cosine of the two texts' word-count vectors."""
    ca, cb = Counter(_WORD.findall(a.lower())), Counter(_WORD.findall(b.lower()))
    return _cosine_counts(ca, cb)


def _cosine_counts(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(n * b[w] for w, n in a.items())
    norm = math.sqrt(sum(n * n for n in a.values()) * sum(n * n for n in b.values()))
    return dot / norm if norm else 0.0


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return dot / norm if norm else 0.0


def similarity(
    texts: Sequence[str], *, engine: EngineClient | None = None, embed_model: str | None = None
) -> float | None:
    """The mean pairwise similarity of ``texts``; None for fewer than two."""
    if len(texts) < 2:
        return None
    if embed_model is not None and engine is not None:
        vectors = engine.embed(embed_model, list(texts)).embeddings
        pairs = [cosine(a, b) for a, b in combinations(vectors, 2)]
    else:
        pairs = [word_cosine(a, b) for a, b in combinations(texts, 2)]
    return sum(pairs) / len(pairs)
