"""The parity matrix: one model's embeddings on every backend × device, against torch on cpu.

Each backend runs the form of the model it reads (``load(model, backend=...)``): the model
itself, or a derived entry (``forge convert``) linked to it, converted on the spot when
missing. ``run`` returns rows for Python and the notebook widgets; ``forge parity`` prints
them and exits nonzero when any pair is out of tolerance. Any ``EngineClient`` runs it,
in process or remote.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from .errors import ForgeError
from .interface import EngineClient

TEXTS = [
    "a cat sits",
    "a kitten is sitting",
    "stock market",
    "The quick brown fox jumps over the lazy dog.",
    "Parity means the same answer everywhere.",
    "émigré café naïve",
    "東京は日本の首都です",
    "",
]
TOLERANCE = {"wgpu": 1e-4}  # max abs diff per backend; 1e-5 for the rest
DEFAULT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Row:
    backend: str
    device: str
    model: str
    max_abs_diff: float | None = None
    min_cosine: float | None = None
    load_ms: float | None = None
    ms_per_batch: float | None = None
    ok: bool = False
    error: str | None = None


def run(
    engine: EngineClient,
    model: str,
    backends: list[str] | None = None,
    devices: list[str] | None = None,
    tolerance: float | None = None,
    repeats: int = 3,
) -> list[Row]:
    """Embed ``TEXTS`` on every available backend × device and compare with torch on cpu."""
    engine.load(model, backend="torch", device="cpu")
    reference = engine.embed(model, TEXTS).embeddings
    rows: list[Row] = []
    for device in engine.devices():
        for backend in device.backends:
            if (backends and backend not in backends) or (devices and device.id not in devices):
                continue
            if backend in ("null", "llama_cpp"):
                continue  # not sentence encoders of this model
            rows.append(_measure(engine, model, backend, device.id, reference, tolerance, repeats))
    engine.unload(model)
    return rows


def _measure(
    engine: EngineClient,
    model: str,
    backend: str,
    device: str,
    reference: list[list[float]],
    tolerance: float | None,
    repeats: int,
) -> Row:
    name = model
    try:
        # the form this backend reads (converted now when missing), outside the load timing
        name = engine.load(model, backend=backend, device=device).name
        engine.unload(name)
        start = time.perf_counter()
        engine.load(name, backend=backend, device=device)
        load_ms = (time.perf_counter() - start) * 1e3
        vectors = engine.embed(name, TEXTS).embeddings  # warm: a first call may compile
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            vectors = engine.embed(name, TEXTS).embeddings
            times.append((time.perf_counter() - t) * 1e3)
    except ForgeError as e:
        return Row(backend, device, model, error=str(e))
    finally:
        engine.unload(name)  # the next pair, or the caller, loads with its own options
    diff = max(
        abs(a - b)
        for u, v in zip(reference, vectors, strict=True)
        for a, b in zip(u, v, strict=True)
    )
    cos = min(_cosine(u, v) for u, v in zip(reference, vectors, strict=True))
    limit = tolerance if tolerance is not None else TOLERANCE.get(backend, DEFAULT_TOLERANCE)
    return Row(
        backend,
        device,
        name,
        diff,
        cos,
        load_ms,
        statistics.median(times),
        ok=diff <= limit and cos >= 0.9999,
    )


def _cosine(a: list[float], b: list[float]) -> float:
    num = sum(x * y for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return num / den if den else 1.0
