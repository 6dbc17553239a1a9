"""Compile sentence encoders with Apache TVM (Relax) and cache the libraries in the store.

Two frontends: an ONNX graph, whose input shapes are fixed and folded first (the Relax ONNX
importer needs static shapes for BERT graphs, DESIGN.md §6), or a safetensors folder through
``torch.export``. One library per (batch, tokens) shape, cached under
``<home>/cache/tvm/<sha256>/<target>/<B>x<S>-t<trials>/`` with the weights stored once per
model by content, so a second load compiles nothing. ``trials`` > 0 tunes with meta_schedule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidModelFile, MissingExtra
from ..progress import Progress, ProgressCallback, ignore

log = logging.getLogger(__name__)
BATCHES = (1, 8, 32)  # larger batches run in slices of 32
MIN_TOKENS = 16
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Source:
    """What to compile: a ``.onnx`` file, or a safetensors folder (frontend ``torch``)."""

    path: Path
    sha256: str
    frontend: str  # "onnx" | "torch"


def parse_target(spec: str | dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """A TVM target in dict form (the only form that keeps flags, DESIGN.md §6).

    Accepts ``llvm``, ``cuda``, ``llvm -mcpu=znver3`` or a JSON object.
    """
    if isinstance(spec, dict):
        target = dict(spec)
    elif spec.strip().startswith("{"):
        try:
            target = json.loads(spec)
        except ValueError as e:
            raise ConfigError(f"bad TVM target {spec!r}: {e}") from None
    else:
        kind, *flags = spec.split()
        target = {"kind": kind}
        for flag in flags:
            key, _, value = flag.lstrip("-").partition("=")
            target[key] = int(value) if value.lstrip("-").isdigit() else (value or True)
    if target.get("kind") == "llvm":  # meta_schedule needs it; it is not part of the key
        import psutil

        target.setdefault("num-cores", threads or psutil.cpu_count(logical=False) or 1)
    try:
        import tvm

        tvm.target.Target(target)
    except ImportError as e:
        raise MissingExtra("apache-tvm", "tvm") from e
    except Exception as e:  # TVM raises its own error types for unknown kinds and keys
        raise ConfigError(f"bad TVM target {spec!r}: {str(e).splitlines()[-1]}") from None
    return target


def target_slug(target: dict[str, Any]) -> str:
    """``llvm-1a2b3c4d``: the kind and a hash of the flags that change the code."""
    flags = {k: v for k, v in target.items() if k != "num-cores"}
    digest = hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:8]
    return f"{target['kind']}-{digest}"


def bucket(batch: int, tokens: int, max_tokens: int) -> tuple[int, int]:
    """The compiled shape a (batch ≤ 32, tokens) input is padded to."""
    b = next(x for x in BATCHES if x >= batch)
    s = max(MIN_TOKENS, 1 << math.ceil(math.log2(max(tokens, 1))))
    return b, min(s, max_tokens)


class Cache:
    """Compiled libraries and their weights for one model and target."""

    def __init__(self, root: Path, source: Source, target: dict[str, Any]) -> None:
        self.source, self.target = source, target
        self.model_dir = root / source.sha256[:32]
        self.dir = self.model_dir / target_slug(target)

    def entry(self, shape: tuple[int, int], trials: int) -> Path:
        return self.dir / f"{shape[0]}x{shape[1]}-t{trials}"

    def find(self, shape: tuple[int, int], trials: int | None = None) -> Path | None:
        """The cached library for ``shape``: with ``trials``, or the most tuned one."""
        if trials is not None:
            hit = self.entry(shape, trials)
            return hit if (hit / "lib.so").is_file() else None
        found = sorted(
            (int(p.name.rpartition("-t")[2]), p)
            for p in self.dir.glob(f"{shape[0]}x{shape[1]}-t*")
            if (p / "lib.so").is_file()
        )
        return found[-1][1] if found else None

    def params(self, entry: Path) -> list[Path]:
        names = json.loads((entry / "params.json").read_text())
        return [self.model_dir / "params" / f"{n}.npy" for n in names]

    def build(
        self, shape: tuple[int, int], trials: int = 0, progress: ProgressCallback = ignore
    ) -> Path:
        """Compile (and tune) ``shape`` unless cached; returns the cache entry."""
        hit = self.find(shape, trials)
        if hit is not None:
            return hit
        label = f"{shape[0]}x{shape[1]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{label}-", dir=self.dir))
        try:
            progress(Progress(f"importing {self.source.path.name} at {label} into Relax"))
            mod, params = _import(self.source, shape)
            names = self._save_params(params)
            lib = _compile(mod, self.target, trials, work / "tune", label, progress)
            lib.export_library(str(work / "lib.so"))
            (work / "params.json").write_text(json.dumps(names))
            final = self.entry(shape, trials)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("compiled %s at %s for %s", self.source.path.name, label, self.target["kind"])
        return final

    def _save_params(self, params: Sequence[Any]) -> list[str]:
        import numpy as np

        folder = self.model_dir / "params"
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for p in params:
            array = np.asarray(p.numpy())  # (ascontiguousarray would make scalars 1-d)
            name = hashlib.sha256(
                f"{array.dtype}{array.shape}".encode() + array.tobytes()
            ).hexdigest()[:32]
            path = folder / f"{name}.npy"
            if not path.is_file():  # same weights in every shape: stored once
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, array)
                os.replace(tmp, path)
            names.append(name)
        return names


def _import(source: Source, shape: tuple[int, int]) -> tuple[Any, list[Any]]:
    try:
        from tvm import relax
    except ImportError as e:
        raise MissingExtra("apache-tvm", "tvm") from e
    mod = (
        _from_onnx(source.path, shape)
        if source.frontend == "onnx"
        else _from_torch(source.path, shape)
    )
    mod, params = relax.frontend.detach_params(mod)
    return mod, list(params.get("main", []))


def _from_onnx(path: Path, shape: tuple[int, int]) -> Any:
    onnx = _onnx_modules()[0]
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends
        raise InvalidModelFile(f"cannot read {path}: {e}") from e
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if graph_input.name in INPUTS and len(dims) == 2:
            dims[0].dim_value, dims[1].dim_value = shape
    return import_folded(model, str(path), keep_params_in_input=True)


def _onnx_modules() -> tuple[Any, Any, Any]:
    """onnx, onnxruntime and TVM's ONNX importer, or MissingExtra naming the one missing."""
    try:
        import onnx
        import onnxruntime as ort
        from tvm.relax.frontend.onnx import from_onnx
    except ImportError as e:
        raise MissingExtra(f"{e.name} (for TVM's ONNX frontend)", "onnx") from e
    return onnx, ort, from_onnx


def import_folded(model: Any, what: str, **frontend: Any) -> Any:
    """``model`` (an onnx ModelProto whose inputs have static shapes) through TVM's ONNX
    importer, after onnxruntime's basic level folded the Shape/ConstantOfShape chains the
    importer rejects. ``frontend``: keywords for ``from_onnx``."""
    onnx, ort, from_onnx = _onnx_modules()

    with tempfile.TemporaryDirectory() as tmp:
        fixed, folded = Path(tmp, "fixed.onnx"), Path(tmp, "folded.onnx")
        onnx.save(model, str(fixed))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(folded)
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(fixed), so, providers=["CPUExecutionProvider"])
            return from_onnx(onnx.load(str(folded)), **frontend)
        except Exception as e:  # the importer's and onnxruntime's own errors
            raise InvalidModelFile(f"TVM cannot import {what}: {str(e).splitlines()[-1]}") from e


def _from_torch(folder: Path, shape: tuple[int, int]) -> Any:
    try:
        import torch
        import transformers  # noqa: F401
        from tvm.relax.frontend.torch import from_exported_program
    except ImportError as e:
        raise MissingExtra(f"{e.name} (for TVM's torch frontend)", "torch") from e
    from .torch_backend import traceable_encoder

    encoder = traceable_encoder(folder)
    example = tuple(torch.ones(shape, dtype=torch.int64) for _ in INPUTS)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(encoder, example)
        return from_exported_program(
            program, keep_params_as_input=True, unwrap_unit_return_tuple=True
        )


def _compile(
    mod: Any,
    target: dict[str, Any],
    trials: int,
    work: Path,
    label: str,
    progress: ProgressCallback,
) -> Any:
    import tvm
    from tvm import relax

    tvm_target = tvm.target.Target(target)
    with tvm_target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),
            ]
        )(mod)
    if trials > 0:
        from .tvm_tune import tune

        database = tune(mod, tvm_target, trials, work, label, progress)
        with tvm_target, database:
            mod = relax.transform.MetaScheduleApplyDatabase(str(work))(mod)
    progress(Progress(f"compiling {label} for {target['kind']}"))
    return tvm.compile(mod, target=tvm_target)
