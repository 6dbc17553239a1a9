"""The ONNX backend (extra ``onnx``): onnxruntime on the CPU execution provider, or
TensorRT, CUDA, CoreML and DirectML when onnxruntime reports them (TensorRT first on a CUDA
device, its engines cached in the store's cache). A text encoder is a folder with one
``*.onnx`` graph whose first output is ``last_hidden_state``, plus ``tokenizer.json``; a
cross-encoder's (its config.json names a ``...ForSequenceClassification``) gives ``logits``
instead. Any graph answers ``infer``; one with no tokenizer only that.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import InferenceError, InvalidModelFile, MissingExtra
from ..mold import Device, LoadOptions, Mold
from ..store.manifest import Manifest
from ..tensors import TensorSpec
from .encoders import Batch, EncoderMold
from .tensor_mold import Specs, TensorMold

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

    def signature(self, manifest: Manifest) -> Specs:
        """The graph's inputs and outputs, read from a CPU session (at pull)."""
        return specs_of(session(manifest.file, "cpu", LoadOptions()))

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("onnxruntime", "onnx")
        memory = self.estimate_memory(manifest, opts)
        folder = manifest.file if manifest.file.is_dir() else manifest.file.parent
        if (folder / "tokenizer.json").is_file():
            return OnnxMold(manifest, device, opts, memory)
        return OnnxTensorMold(manifest, device, opts, memory)


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
    tasks = frozenset({*EncoderMold.tasks, "infer"})  # its graph answers infer as well

    def _load_runtime(self) -> None:
        self._session = session(self.path, self.device, self.opts)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name
        binding = self.opts.settings.onnx_io_binding
        # Binding saves the host<->device copies of inputs and outputs; on the CPU there are none
        self.io_binding = self.device != "cpu" if binding is None else bool(binding)
        self.metadata = self.metadata.model_copy(deep=True)
        self.metadata.input_shapes, self.metadata.output_shapes = specs_of(self._session)

    def _tensors(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return run(self._session, inputs)

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


class OnnxTensorMold(TensorMold):
    """An ONNX graph with no tokenizer: it takes and gives tensors (``infer``)."""

    backend = "onnx"

    def _load_runtime(self) -> Specs:
        self._session = session(self.path, self.device, self.opts)
        return specs_of(self._session)

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return run(self._session, inputs)


def graph_of(path: Path) -> Path:
    """The ``.onnx`` graph of a model file or folder."""
    graphs = sorted(path.glob("*.onnx")) if path.is_dir() else [path]
    if not graphs:
        raise InvalidModelFile(f"no .onnx graph in {path}")
    return graphs[0]


def session(path: Path, device: str, opts: LoadOptions) -> Any:
    """An onnxruntime session for the graph at ``path`` on ``device``."""
    import onnxruntime as ort

    graph = graph_of(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _LEVELS[opts.settings.onnx_optimization]
    )
    so.intra_op_num_threads = opts.threads or 0
    so.log_severity_level = 3
    try:
        providers = providers_for(device, ort.get_available_providers())
        return ort.InferenceSession(
            str(graph), so, providers=provider_options(providers, opts.cache_dir)
        )
    except Exception as e:  # onnxruntime raises its own types for bad graphs
        raise InvalidModelFile(f"onnxruntime cannot load {graph}: {e}") from e


def specs_of(sess: Any) -> Specs:
    """A session's inputs and outputs as specs; a named (symbolic) dimension is -1."""

    def spec(arg: Any) -> TensorSpec:
        kind = str(arg.type).removeprefix("tensor(").removesuffix(")")
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape or []]
        return TensorSpec(name=arg.name, datatype=_ONNX_TYPES.get(kind, ""), shape=shape)

    return [spec(i) for i in sess.get_inputs()], [spec(o) for o in sess.get_outputs()]


def run(sess: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    names = [o.name for o in sess.get_outputs()]
    try:
        return dict(zip(names, sess.run(names, inputs), strict=True))
    except Exception as e:  # onnxruntime's own error types
        raise InferenceError(f"onnxruntime: {str(e).splitlines()[0][:300]}") from e


# onnxruntime's element types -> the Open Inference Protocol's datatypes
_ONNX_TYPES = {
    "float": "FP32",
    "double": "FP64",
    "float16": "FP16",
    "bool": "BOOL",
    "string": "BYTES",
    **{f"int{n}": f"INT{n}" for n in (8, 16, 32, 64)},
    **{f"uint{n}": f"UINT{n}" for n in (8, 16, 32, 64)},
}
