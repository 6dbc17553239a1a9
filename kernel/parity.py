"""The parity matrix: one model on every backend × device, against a reference on the cpu.

An embedding model (minilm:l6) embeds ``TEXTS``, compared with torch on the cpu (with its
format's own backend where torch reads no form of it: a GGUF encoder). Any other model is a
tensor model (an ONNX graph, a saved program, a custom model): it runs ``infer`` on inputs
made from its input specs (``example_inputs``), or the caller's, compared output by output
with its format's own backend on the cpu. Each backend runs the form of the model it reads
(``load(model, backend=...)``): the model itself, or a derived entry (``forge convert``)
linked to it, converted on the spot when missing.

A backend that reads no form of the model has no row (unless asked for by name). One not
installed here, or whose runtime does not do the task for this model, is a row ``skipped``
with the reason: not a failure. ``run`` returns rows for Python and the notebook widgets;
``forge parity`` prints them and exits nonzero unless ``passed``. Any ``EngineClient`` runs
it, in process or remote; only an in-process engine knows its backends not installed here.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ForgeError, InvalidTensor, MissingExtra, UnsupportedFormat, UnsupportedTask
from .interface import EngineClient
from .store.manifest import Manifest

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
MIN_COSINE = 0.9999
REFERENCE = "torch"  # embeddings' reference backend


@dataclass(frozen=True)
class Row:
    backend: str
    device: str  # "-" for a backend not installed here
    model: str
    max_abs_diff: float | None = None
    min_cosine: float | None = None
    load_ms: float | None = None
    ms_per_batch: float | None = None
    ok: bool = False
    error: str | None = None
    skipped: str | None = None  # why the pair was not measured; not a failure


def passed(rows: Iterable[Row]) -> bool:
    """Some pair was measured, and every measured pair is within tolerance."""
    measured = [r for r in rows if r.skipped is None]
    return bool(measured) and all(r.ok for r in measured)


Outputs = Any  # list[list[float]] (embeddings) or dict[str, ndarray] (tensors)
Compare = Callable[[Outputs, Outputs], tuple[float, float, float]]  # diff, cosine, scale


def run(
    engine: EngineClient,
    model: str,
    backends: list[str] | None = None,
    devices: list[str] | None = None,
    tolerance: float | None = None,
    repeats: int = 3,
    inputs: Mapping[str, Any] | None = None,
) -> list[Row]:
    """Run ``model`` on every available backend × device (or those named) and compare each
    with the reference on the cpu: embeddings of ``TEXTS`` for an embedding model, else the
    outputs of ``infer`` on ``inputs`` (default: ``example_inputs`` of its specs)."""
    manifest = engine.show(model)
    reference_backend, call, compare = _task(engine, manifest, inputs)
    try:
        loaded = engine.load(model, backend=reference_backend, device="cpu")
    except UnsupportedFormat:  # torch reads no form of it (a GGUF encoder): its own backend
        loaded = engine.load(model, device="cpu")
    try:
        reference = call(loaded.name)
    finally:
        engine.unload(loaded.name)
    task = _Task(call, reference, compare)
    rows: list[Row] = []
    listed: set[str] = set()
    for device in engine.devices():
        for backend in device.backends:
            listed.add(backend)
            if (backends and backend not in backends) or (devices and device.id not in devices):
                continue
            row = _measure(
                engine, model, backend, device.id, bool(backends), task, tolerance, repeats
            )
            if row is not None:
                rows.append(row)
    if not devices or backends:
        rows += _not_here(engine, manifest.name, manifest.format, listed, backends)
    return rows


def _task(
    engine: EngineClient, manifest: Manifest, inputs: Mapping[str, Any] | None
) -> tuple[str | None, Callable[[str], Outputs], Compare]:
    """The reference backend (None: the format's own), how to run a model, how to compare."""
    kind = manifest.metadata.model_type
    if inputs is None and kind == "embedding":
        return REFERENCE, lambda name: engine.embed(name, TEXTS).embeddings, _compare_embeddings
    if inputs is None and kind == "llm":
        raise UnsupportedTask(
            f"parity compares embeddings and tensor outputs; {manifest.name} is a "
            "text-generation model"
        )
    feed = dict(inputs) if inputs is not None else example_inputs(manifest)
    return None, lambda name: engine.infer(name, feed).tensors, _compare_tensors


@dataclass(frozen=True)
class _Task:
    """What each pair runs (``call`` of the name it loaded) and how its answer is judged."""

    call: Callable[[str], Outputs]
    reference: Outputs
    compare: Compare


def _measure(
    engine: EngineClient,
    model: str,
    backend: str,
    device: str,
    named: bool,
    task: _Task,
    tolerance: float | None,
    repeats: int,
) -> Row | None:
    name = model
    try:
        # the form this backend reads (converted now when missing), outside the load timing
        name = engine.load(model, backend=backend, device=device).name
        engine.unload(name)
        start = time.perf_counter()
        engine.load(name, backend=backend, device=device)
        load_ms = (time.perf_counter() - start) * 1e3
        got = task.call(name)  # warm: a first call may compile
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            got = task.call(name)
            times.append((time.perf_counter() - t) * 1e3)
    except UnsupportedFormat as e:  # no form of the model it reads: a row only when named
        return Row(backend, device, model, skipped=_first_clause(e)) if named else None
    except (MissingExtra, UnsupportedTask) as e:
        return Row(backend, device, model, skipped=str(e))
    except ForgeError as e:
        return Row(backend, device, model, error=str(e))
    finally:
        engine.unload(name)  # the next pair, or the caller, loads with its own options
    try:
        diff, cos, scale = task.compare(task.reference, got)
    except (InvalidTensor, ValueError) as e:  # outputs of other names, shapes or lengths
        return Row(backend, device, name, error=str(e))
    limit = tolerance if tolerance is not None else TOLERANCE.get(backend, DEFAULT_TOLERANCE)
    ok = diff <= limit * scale and cos >= MIN_COSINE
    return Row(backend, device, name, diff, cos, load_ms, statistics.median(times), ok=ok)


def _not_here(
    engine: EngineClient, model: str, fmt: str, listed: Collection[str], named: list[str] | None
) -> list[Row]:
    """Rows skipped for the backends with no device here: an in-process engine's that are
    not installed (when they would read a form of the model), and any named one."""
    from .backends import extra_for
    from .convert import SOURCES

    registry = getattr(engine, "backends", None)  # an in-process engine's Backends
    known = {b.name: b for b in registry} if registry is not None else {}
    rows = []
    for name, backend in known.items():
        if name in listed or (named and name not in named):
            continue
        if fmt in backend.formats or any(fmt in SOURCES.get(f, ()) for f in backend.formats):
            rows.append(Row(name, "-", model, skipped=str(MissingExtra(name, extra_for(name)))))
        elif named:
            why = f"backend {name} does not read {fmt} models"
            rows.append(Row(name, "-", model, skipped=why))
    for name in named or ():
        if name not in listed and name not in known:
            why = (
                f"no {name} backend here; installed: {', '.join(sorted(known))}"
                if registry is not None
                else "the engine lists no device for it"
            )
            rows.append(Row(name, "-", model, skipped=why))
    return rows


def example_inputs(manifest: Manifest, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Inputs for a tensor model made from its stored specs: every dimension of any size
    is ``batch``; floats are normal, integers 0..9, booleans random (fixed by ``seed``).
    InvalidTensor when it declares none, or one of a datatype that cannot be made up."""
    import numpy as np

    from .tensors import dtype_of

    specs = manifest.metadata.input_shapes
    if not specs:
        raise InvalidTensor(f"{manifest.name} declares no input specs: pass the inputs")
    rng = np.random.default_rng(seed)
    made = {}
    for spec in specs:
        if spec.datatype in ("", "BYTES"):
            raise InvalidTensor(f"cannot make up input {spec.describe()}: pass the inputs")
        shape = [batch if d < 0 else d for d in spec.shape]
        dtype = dtype_of(spec.datatype)
        if dtype.kind == "f":
            made[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            made[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            made[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return made


def _compare_embeddings(
    reference: list[list[float]], got: list[list[float]]
) -> tuple[float, float, float]:
    diff = max(
        abs(a - b) if a - b == a - b else math.inf  # NaN: never within tolerance
        for u, v in zip(reference, got, strict=True)
        for a, b in zip(u, v, strict=True)
    )
    cos = min(_cosine(u, v) for u, v in zip(reference, got, strict=True))
    return diff, cos, 1.0


def _compare_tensors(reference: dict[str, Any], got: dict[str, Any]) -> tuple[float, float, float]:
    """Over every output: the max abs difference (NaN where the reference has none is
    infinite), the min cosine of each sample (first axis), and the largest magnitude above
    1, which the tolerance scales with (logits are not unit vectors). A missing output, or
    one of another shape, is an InvalidTensor; bytes and strings must be equal."""
    import numpy as np

    diff, cos, scale = 0.0, 1.0, 1.0
    for name, want in reference.items():
        if name not in got:
            raise InvalidTensor(f"no output {name!r}; it gave: {', '.join(got)}")
        a, b = np.asarray(want), np.asarray(got[name])
        if a.shape != b.shape:
            raise InvalidTensor(f"output {name!r} has shape {list(b.shape)}, not {list(a.shape)}")
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            if not np.array_equal(a, b):
                diff, cos = math.inf, 0.0
            continue
        if not a.size:
            continue
        with np.errstate(all="ignore"):  # inf - inf is NaN here, then made infinite
            d, c, m = _gaps(a.astype(np.float64), b.astype(np.float64))
        diff, scale = max(diff, d), max(scale, m)
        cos = min(cos, c)
    return diff, cos, scale


def _gaps(a: Any, b: Any) -> tuple[float, float, float]:
    """Of two float64 arrays of one shape: the max abs difference, the min cosine of a
    sample and the largest finite magnitude of ``a``."""
    import numpy as np

    same = (a == b) | (np.isnan(a) & np.isnan(b))
    gap = np.nan_to_num(np.where(same, 0.0, np.abs(a - b)), nan=np.inf)
    scale = float(np.nan_to_num(np.abs(a), nan=0.0, posinf=0.0).max())
    u = np.nan_to_num(a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1))
    v = np.nan_to_num(b.reshape(u.shape))
    den = np.sqrt((u * u).sum(axis=1) * (v * v).sum(axis=1))
    sims = np.where(den > 0, (u * v).sum(axis=1) / np.where(den > 0, den, 1.0), 1.0)
    return float(gap.max()), float(sims.min()), scale


def _first_clause(e: Exception) -> str:
    """``backend x does not read y models`` out of a longer UnsupportedFormat."""
    return str(e).split(" (", 1)[0]


def _cosine(a: list[float], b: list[float]) -> float:
    num = sum(x * y for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return num / den if den else 1.0
