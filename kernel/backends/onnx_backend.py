"""The ONNX backend (extra ``onnx``): onnxruntime on the CPU execution provider, or
TensorRT, CUDA, CoreML and DirectML when onnxruntime reports them (TensorRT first on a CUDA
device, its engines cached in the store's cache). A model is a folder with one ``*.onnx``
graph whose first output is ``last_hidden_state``, plus ``tokenizer.json``; a cross-encoder's
(its config.json names a ``...ForSequenceClassification``) gives ``logits`` instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import InvalidModelFile, MissingExtra
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from .encoders import Batch, EncoderMold

# onnxruntime provider -> our device id; on one device, the first one available is tried first
TENSORRT = "TensorrtExecutionProvider"
_PROVIDERS = {
    TENSORRT: "cuda:0",
    "CUDAExecutionProvider": "cuda:0",
    "CoreMLExecutionProvider": "metal:0",
    "DmlExecutionProvider": "dx12:0",
}


# our onnx_optimization setting -> onnxruntime's GraphOptimizationLevel member
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OnnxBackend:
    name = "onnx"
    formats = frozenset({"onnx"})

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("onnxruntime", "tokenizers", "numpy"))

    def devices(self) -> list[Device]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        found = [cpu_device(self.name)]
        for device in dict.fromkeys(_PROVIDERS.values()):
            names = [p for p in providers_for(device, available) if p != "CPUExecutionProvider"]
            if names:
                found.append(Device(device, " + ".join(names), None, None, (self.name,)))
        return found

    def accelerators(self) -> dict[str, str | None]:
        """Execution providers worth naming, each None when usable here, else why not."""
        import onnxruntime as ort

        why = None
        if TENSORRT not in ort.get_available_providers():
            why = (
                f"onnxruntime {ort.__version__} here has no {TENSORRT}: it needs onnxruntime-gpu "
                "built with TensorRT, the TensorRT libraries and a CUDA device"
            )
        return {"tensorrt": why}

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.5) + (64 << 20)

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("onnxruntime", "onnx")
        return OnnxMold(manifest, device, opts, self.estimate_memory(manifest, opts))


def providers_for(device: str, available: list[str]) -> list[str]:
    """The execution providers for ``device``, best first, of those ``available``; the CPU
    last, for the operators the others do not run."""
    wanted = [p for p, d in _PROVIDERS.items() if d == device and p in available]
    return [*wanted, "CPUExecutionProvider"]


def provider_options(providers: list[str], cache: Path | None) -> list[Any]:
    """``providers`` as onnxruntime takes them: TensorRT builds an engine per model and
    shape, which takes minutes, so its engines are cached (in the store's cache)."""
    if TENSORRT not in providers or cache is None:
        return list(providers)
    trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / "tensorrt")}
    return [(p, trt) if p == TENSORRT else p for p in providers]


class OnnxMold(EncoderMold):
    backend = "onnx"
    reranks = True

    def _load_runtime(self) -> None:
        import onnxruntime as ort

        graphs = sorted(self.path.glob("*.onnx")) if self.path.is_dir() else [self.path]
        if not graphs:
            raise InvalidModelFile(f"no .onnx graph in {self.path}")
        level = self.opts.settings.onnx_optimization
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
        so.intra_op_num_threads = self.opts.threads or 0
        so.log_severity_level = 3
        try:
            providers = providers_for(self.device, ort.get_available_providers())
            self._session = ort.InferenceSession(
                str(graphs[0]), so, providers=provider_options(providers, self.opts.cache_dir)
            )
        except Exception as e:  # onnxruntime raises its own types for bad graphs
            raise InvalidModelFile(f"onnxruntime cannot load {graphs[0]}: {e}") from e
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name
        binding = self.opts.settings.onnx_io_binding
        # Binding saves the host<->device copies of inputs and outputs; on the CPU there are none
        self.io_binding = self.device != "cpu" if binding is None else bool(binding)

    def _hidden(self, batch: Batch) -> Any:
        feed = {
            name: value
            for name, value in (
                ("input_ids", batch.input_ids),
                ("attention_mask", batch.attention_mask),
                ("token_type_ids", batch.token_type_ids),
            )
            if name in self._inputs
        }
        if not self.io_binding:
            return self._session.run([self._output], feed)[0]
        binding = self._session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self._output, self.device.split(":")[0].replace("metal", "cpu"))
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
