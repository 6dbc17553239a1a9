"""An example FerrousForge plugin: ``hashvec``, an embedding model made of a hash.

Installed next to ferrousforge (``pip install examples/forge-plugin-example``), it adds the
``hashvec`` backend through the ``ferrousforge.backends`` entry point, and every engine
started there stores and serves the model ``hashvec``: ``forge embed hashvec "a text"``,
``/api/embed`` and ``/v1/embeddings`` answer its vectors. Nothing in the engine changes.
"""

from __future__ import annotations

import hashlib
import math

from ferrousforge import CustomModel

DIMS = 32


class HashVectors(CustomModel):
    """Bag-of-words vectors from a hash: texts sharing words get similar vectors."""

    backend_name = "hashvec"
    models = ("hashvec",)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [vector(text) for text in texts]


def vector(text: str, dims: int = DIMS) -> list[float]:
    """Each word adds +1 or -1 to one of ``dims`` buckets (by its sha256); unit length."""
    v = [0.0] * dims
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        v[digest[0] % dims] += 1.0 if digest[1] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]
