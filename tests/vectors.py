"""Comparing embeddings in tests: cosine, and 'the same vectors' within a tolerance."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    num = sum(x * y for x, y in zip(a, b, strict=True))
    return num / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def assert_matches(
    reference: Sequence[Sequence[float]], got: Sequence[Sequence[float]], limit: float
) -> None:
    """Row by row: cosine ≥ 0.9999 and max abs difference ≤ ``limit``."""
    for a, b in zip(reference, got, strict=True):
        assert cosine(a, b) >= 0.9999
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= limit
