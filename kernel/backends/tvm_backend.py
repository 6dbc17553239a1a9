"""The TVM backend (extra ``tvm``): sentence encoders compiled with Apache TVM Relax.

It reads ONNX graphs, safetensors folders (through ``torch.export``) and the ``tvm``
entries ``forge convert --to tvm`` makes (an ONNX graph plus ``tvm.json``: target, shapes
compiled ahead and tuning trials). Inputs are padded to a compiled (batch, tokens) shape;
a shape not compiled yet is compiled on first use and cached (``tvm_compile.Cache``).
An ONNX graph with no tokenizer answers ``infer`` instead (:mod:`tvm_tensors`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import InvalidModelFile, MissingExtra
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from .encoders import Batch, EncoderMold
from .tvm_compile import INPUTS, Cache, Source, bucket, parse_target

log = logging.getLogger(__name__)
SPEC = "tvm.json"


class TvmBackend:
    name = "tvm"
    formats = frozenset({"tvm", "onnx", "safetensors"})

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("tvm", "tokenizers", "numpy"))

    def devices(self) -> list[Device]:
        import tvm

        found = [cpu_device(self.name)]
        index = 0
        while tvm.cuda(index).exist:
            found.append(Device(f"cuda:{index}", tvm.cuda(index).device_name, None, None, ("tvm",)))
            index += 1
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.3) + (96 << 20)

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("apache-tvm", "tvm")
        memory = self.estimate_memory(manifest, opts)
        folder = manifest.file if manifest.file.is_dir() else manifest.file.parent
        if manifest.format == "onnx" and not (folder / "tokenizer.json").is_file():
            from .tvm_tensors import TvmTensorMold

            return TvmTensorMold(manifest, device, opts, memory)
        return TvmMold(manifest, device, opts, memory)


def source_of(manifest: Manifest) -> Source:
    """The graph a model compiles from, keyed by that graph's own sha256."""
    if manifest.format == "safetensors":
        return Source(manifest.file, manifest.sha256, "torch")
    path = manifest.file
    if path.is_dir():
        graphs = sorted(path.glob("*.onnx"))
        if not graphs:
            raise InvalidModelFile(f"no .onnx graph in {path}")
        path = graphs[0]
        rel = path.relative_to(manifest.file).as_posix()
        sha = next((f.sha256 for f in manifest.files if f.path == rel), manifest.sha256)
    else:
        sha = manifest.sha256
    return Source(path, sha, "onnx")


def read_spec(manifest: Manifest) -> dict[str, Any]:
    """A ``tvm`` entry's compile spec; empty for plain ONNX and safetensors models."""
    if manifest.format != "tvm":
        return {}
    try:
        spec = json.loads((manifest.file / SPEC).read_text())
    except (OSError, ValueError) as e:
        raise InvalidModelFile(f"cannot read {manifest.file / SPEC}: {e}") from e
    return spec if isinstance(spec, dict) else {}


class TvmMold(EncoderMold):
    backend = "tvm"
    slice_rows = 8  # every slice pads to a compiled (8, tokens) or (1, tokens) shape

    def __init__(self, manifest: Manifest, device: Device, opts: LoadOptions, memory: int):
        super().__init__(manifest, device, opts, memory)
        self.manifest = manifest
        self._vms: dict[tuple[int, int], tuple[Any, list[Any]]] = {}
        self._weights: dict[Path, Any] = {}

    def _load_runtime(self) -> None:
        import tvm

        spec = read_spec(self.manifest)
        kind = "cuda" if self.device.startswith("cuda") else "llvm"
        wanted = spec.get("target") or {}
        target = parse_target(wanted if wanted.get("kind") == kind else kind, self.opts.threads)
        # None: any build; N: the builds made with N tuning trials (tvm.json)
        self.trials: int | None = spec.get("trials") if wanted.get("kind") == kind else None
        root = (self.opts.cache_dir or Path.home() / ".ferrousforge" / "cache") / "tvm"
        self.cache = Cache(root, source_of(self.manifest), target)
        index = int(self.device.partition(":")[2] or 0)
        self._dev = tvm.cuda(index) if kind == "cuda" else tvm.cpu()
        for shape in spec.get("shapes", []):  # compiled ahead: warm them now
            self._vm((int(shape[0]), int(shape[1])))

    def _release(self) -> None:
        self._vms.clear()
        self._weights.clear()

    def _vm(self, shape: tuple[int, int]) -> tuple[Any, list[Any]]:
        if shape in self._vms:
            return self._vms[shape]
        import numpy as np
        import tvm
        from tvm import relax

        if self.trials is None:  # a plain graph: the most tuned build there is
            entry = self.cache.find(shape)
        else:  # a tvm entry: the builds it was converted with
            entry = self.cache.find(shape, self.trials)
            if entry is None and self.trials:  # tuning on first use would take minutes
                log.warning("%s has no tuned build at %s; compiling it untuned", self.name, shape)
        entry = entry or self.cache.find(shape, 0) or self.cache.build(shape)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(entry / "lib.so")), self._dev)
        params = []
        for path in self.cache.params(entry):  # shared across shapes: one copy each
            if path not in self._weights:
                self._weights[path] = tvm.runtime.tensor(np.load(path), self._dev)
            params.append(self._weights[path])
        self._vms[shape] = (vm, params)
        return vm, params

    def _hidden(self, batch: Batch) -> Any:
        import numpy as np
        import tvm

        rows, width = batch.input_ids.shape
        out = []
        for start in range(0, rows, 32):
            n = min(32, rows - start)
            b, s = bucket(n, width, max(self.context_length, width))
            vm, params = self._vm((b, s))
            feed = []
            for name in INPUTS:
                padded = np.zeros((b, s), dtype=np.int64)
                padded[:n, :width] = getattr(batch, name)[start : start + n]
                feed.append(tvm.runtime.tensor(padded, self._dev))
            result = vm["main"](*feed, *params)
            hidden = result if hasattr(result, "numpy") else result[0]
            out.append(hidden.numpy()[:n, :width])
        return np.concatenate(out)
