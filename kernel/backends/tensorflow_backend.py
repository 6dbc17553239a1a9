"""The TensorFlow backend (extra ``tensorflow``): SavedModel folders and Keras 3 ``.keras``
files answer ``infer``, on the CPU, or on the GPUs TensorFlow sees.

A SavedModel is loaded with ``tf.saved_model.load`` (Keras 3's ``load_model`` refuses
them) and serves its ``serving_default`` signature (its only one, when it has one only):
the signature's argument names are the inputs, the keys of what it returns the outputs. A
``.keras`` file is loaded with ``keras.models.load_model`` (safe mode: no lambdas); its
inputs and outputs are named after their layers (the ``Input``'s name; the output layer's,
or the key of a model whose outputs are a dict). An unknown dimension is -1.

A signature that is a sentence encoder, one string input of shape [-1] and one float
output of rank 2, also answers ``embed``: a vector per text, as the model gives it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..devices import cpu_device
from ..errors import (
    ConfigError,
    DeviceUnavailable,
    InferenceError,
    InvalidModelFile,
    MissingExtra,
    ModelNotLoaded,
    UnsupportedTask,
)
from ..limits import check_embed_tokens
from ..mold import Device, LoadOptions, Mold
from ..schema import EmbedRequest, Request, Result, Stats
from ..store.manifest import Manifest
from ..tensors import DATATYPES, TensorSpec
from .tensor_mold import Specs, TensorMold

SIGNATURE = "serving_default"  # what tf.saved_model.save and Keras' export name the default
# TensorFlow's (and Keras') dtype names -> the protocol's datatypes; bfloat16 has none
_DATATYPES = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"} | {"string": "BYTES"}
_FLOATS = frozenset({"FP16", "FP32", "FP64"})


def _tf() -> Any:
    """``tensorflow``, imported (an Any for mypy: it ships no types). The first import in a
    process reads the environment: most INFO logs off, GPU memory taken as needed (not all
    of it at the first use: other backends' models share the GPU), Keras on TensorFlow."""
    if "tensorflow" not in sys.modules and (llvm := shared_llvm()):
        raise ConfigError(
            f"tensorflow cannot load in this process: {llvm} is loaded (a GPU driver's, "
            "e.g. since the wgpu backend listed its devices), and TensorFlow's own LLVM "
            "crashes the process beside it; serve TensorFlow models from a process that "
            "has not listed wgpu devices (restart it)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return importlib.import_module("tensorflow")


def shared_llvm() -> str | None:
    """A shared LLVM library loaded in this process (Linux), such as Mesa's, which its
    Vulkan and OpenGL drivers bring: loading TensorFlow after it segfaults in LLVM's static
    initializers (TensorFlow 2.21, Mesa's libLLVM-15)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            lib = line.rpartition(" ")[2]
            if Path(lib).name.startswith("libLLVM"):
                return lib
    return None


@functools.cache
def cpu_only() -> bool:
    """Whether the TensorFlow installed is ``tensorflow-cpu`` alone, which sees no GPU: then
    listing devices need not import it (seconds, and threads a later fork must not meet)."""
    dists = importlib.metadata.packages_distributions().get("tensorflow", [])
    return {d.lower().replace("_", "-") for d in dists} == {"tensorflow-cpu"}


def gpus() -> list[tuple[str, Any]]:
    """TensorFlow's GPUs as (our device id, its physical device), in its order."""
    kind = "metal" if sys.platform == "darwin" else "cuda"  # tensorflow-metal on macOS
    found = _tf().config.list_physical_devices("GPU")
    return [(f"{kind}:{i}", d) for i, d in enumerate(found)]


def datatype(name: str) -> str:
    """The protocol's datatype for a TensorFlow dtype name ("" for one it has none for)."""
    return _DATATYPES.get(name, "")


def is_sentence_encoder(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """One string input of shape [-1] and one float output of rank 2: texts in, vectors out."""
    return (
        len(inputs) == 1
        and len(outputs) == 1
        and inputs[0].datatype == "BYTES"
        and inputs[0].shape == [-1]
        and outputs[0].datatype in _FLOATS
        and len(outputs[0].shape) == 2
    )


def tasks_of(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> frozenset[str]:
    return frozenset({"infer", "embed"} if is_sentence_encoder(inputs, outputs) else {"infer"})


class TensorflowBackend:
    name = "tensorflow"
    formats = frozenset({"tensorflow"})

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) for m in ("tensorflow", "numpy"))

    def devices(self) -> list[Device]:
        found = [cpu_device(self.name)]
        if cpu_only() and "tensorflow" not in sys.modules:
            return found
        try:
            tf = _tf()
        except ConfigError:  # it cannot load here (shared_llvm): loading a model says why
            return found
        for device_id, d in gpus():
            details: dict[str, Any] = {}
            with contextlib.suppress(Exception):  # details are optional; the GPU is there
                details = tf.config.experimental.get_device_details(d)
            name = str(details.get("device_name") or d.name)
            found.append(Device(device_id, name, None, None, (self.name,)))
        return found

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return int(manifest.size * 1.5) + (128 << 20)

    def signature(self, manifest: Manifest) -> Specs:
        """The served signature's inputs and outputs (at pull): a SavedModel's read from its
        ``saved_model.pb``, no variables loaded; a ``.keras`` file's from the model."""
        if manifest.file.is_dir():
            return saved_model_specs(manifest.file)
        return keras_specs(load_keras(manifest.file))

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        if not self.available():
            raise MissingExtra("tensorflow", "tensorflow")
        return TensorflowMold(manifest, device, opts, self.estimate_memory(manifest, opts))


# -- SavedModel folders --


def signature_name(names: Sequence[str], where: Path) -> str:
    """The signature to serve of ``names``: ``serving_default``, else the only one."""
    names = [n for n in names if not n.startswith("__")]  # __saved_model_init_op
    if SIGNATURE in names:
        return SIGNATURE
    if len(names) == 1:
        return names[0]
    has = ", ".join(sorted(names)) or "none"
    raise InvalidModelFile(f"the SavedModel {where} has no {SIGNATURE!r} signature; it has: {has}")


def saved_model_specs(folder: Path) -> Specs:
    """The serving signature's specs as ``saved_model.pb`` declares them."""
    tf = _tf()
    saved_model_pb2 = importlib.import_module("tensorflow.core.protobuf.saved_model_pb2")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as e:  # OSError, protobuf's DecodeError
        raise InvalidModelFile(f"cannot read {folder / 'saved_model.pb'}: {e}") from e
    graphs = list(proto.meta_graphs)
    serve = [g for g in graphs if "serve" in g.meta_info_def.tags] or graphs
    if not serve:
        raise InvalidModelFile(f"the SavedModel {folder} holds no graph")
    signatures = serve[0].signature_def
    sig = signatures[signature_name(list(signatures), folder)]

    def spec(name: str, info: Any) -> TensorSpec:
        shape = info.tensor_shape
        if shape.unknown_rank:  # any rank: nothing is checked
            return TensorSpec(name=name)
        dims = [d.size if d.size >= 0 else -1 for d in shape.dim]
        return TensorSpec(name=name, datatype=datatype(tf.as_dtype(info.dtype).name), shape=dims)

    return (
        [spec(k, sig.inputs[k]) for k in sorted(sig.inputs)],
        [spec(k, sig.outputs[k]) for k in sorted(sig.outputs)],
    )


def _tf_spec(name: str, spec: Any) -> TensorSpec:
    """A ``tf.TensorSpec`` (or KerasTensor) as ours."""
    dims = spec.shape
    if not isinstance(dims, tuple):  # a tf.TensorShape
        if dims.rank is None:  # any rank: nothing is checked
            return TensorSpec(name=name)
        dims = dims.as_list()
    kind = spec.dtype if isinstance(spec.dtype, str) else spec.dtype.name
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in dims]
    return TensorSpec(name=name, datatype=datatype(kind), shape=shape)


def load_saved_model(folder: Path) -> tuple[Callable[[dict[str, Any]], dict[str, Any]], Specs]:
    """The serving signature of the SavedModel at ``folder``: a function of tensors by
    input name, giving tensors by output name, and its specs."""
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as e:  # OSError and TensorFlow's own errors for a broken SavedModel
        raise InvalidModelFile(f"tensorflow cannot load the SavedModel {folder}: {e}") from e
    served = signature_name(list(loaded.signatures), folder)
    fn = loaded.signatures[served]
    args = fn.structured_input_signature[1]  # signatures take keyword arguments only
    outs = fn.structured_outputs
    specs = (
        [_tf_spec(k, args[k]) for k in sorted(args)],
        [_tf_spec(k, outs[k]) for k in sorted(outs)],
    )
    dtypes = {k: s.dtype for k, s in args.items()}

    def call(feed: dict[str, Any]) -> dict[str, Any]:
        tensors = {k: tf.convert_to_tensor(v, dtype=dtypes[k]) for k, v in feed.items()}
        # through ``loaded``, which must live: the variables the signature reads are its
        return {k: v.numpy() for k, v in loaded.signatures[served](**tensors).items()}

    return call, specs


# -- .keras files --


def load_keras(path: Path) -> Any:
    """The Keras model in the ``.keras`` file at ``path`` (not compiled: it only predicts).
    Keras reads only files so named: a URL pull's blob, named by its digest, is read through
    a link named ``model.keras``."""
    _tf()
    keras = importlib.import_module("keras")
    with tempfile.TemporaryDirectory(prefix="forge-keras-") as tmp:
        named = path
        if path.suffix != ".keras":
            named = Path(tmp) / "model.keras"
            named.symlink_to(path.resolve())
        try:
            return keras.models.load_model(str(named), compile=False)
        except Exception as e:  # ValueError, OSError, zipfile's and h5py's errors
            raise InvalidModelFile(f"keras cannot load {path.name}: {e}") from e


def _layer_name(tensor: Any, fallback: str) -> str:
    # The layer that made it, as Keras names outputs (Functional.output_names): a tensor's
    # own name is a per-process counter unless its Input was named.
    history = getattr(tensor, "_keras_history", None)
    return str(history[0].name) if history else fallback


def _structure(model: Any, which: str) -> Any:
    try:
        return getattr(model, which)  # a tensor, a list of them, or a dict by name
    except AttributeError:  # a Sequential model that was never called has none
        return None


def keras_io(model: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """A model's (name, KerasTensor) inputs and outputs."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except AttributeError:
        inputs = outputs = []
    if not inputs or not outputs:
        raise InvalidModelFile(
            f"the Keras model {model.name!r} has no known inputs and outputs: a Functional or "
            "Sequential model has them (a subclassed one does not)"
        )
    ins = [(_layer_name(t, f"input_{i}"), t) for i, t in enumerate(inputs)]
    struct = _structure(model, "output")
    if isinstance(struct, dict):
        return ins, list(struct.items())
    return ins, [(_layer_name(t, f"output_{i}"), t) for i, t in enumerate(outputs)]


def keras_specs(model: Any) -> Specs:
    ins, outs = keras_io(model)
    return [_tf_spec(n, t) for n, t in ins], [_tf_spec(n, t) for n, t in outs]


def keras_call(model: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function of the model's tensors by input name, giving them by output name."""
    tf = _tf()
    ins, outs = keras_io(model)
    by_dict = isinstance(_structure(model, "input"), dict)  # then keyed by the Inputs' names
    dtypes = {n: t.dtype for n, t in ins}
    out_names = [n for n, _ in outs]

    def call(feed: dict[str, Any]) -> dict[str, Any]:
        tensors = [tf.convert_to_tensor(feed[n], dtype=dtypes[n]) for n, _ in ins]
        if len(tensors) == 1:
            args: Any = tensors[0]
        elif by_dict:
            args = {t.name: x for (_, t), x in zip(ins, tensors, strict=True)}
        else:
            args = tensors
        found = model(args, training=False)
        if isinstance(found, dict):
            return {k: v.numpy() for k, v in found.items()}
        values = list(found) if isinstance(found, list | tuple) else [found]
        return {n: v.numpy() for n, v in zip(out_names, values, strict=True)}

    return call


# -- the Mold --


class TensorflowMold(TensorMold):
    """A SavedModel's serving signature or a Keras model: ``infer``, and ``embed`` when it
    is a sentence encoder."""

    backend = "tensorflow"

    def __init__(self, manifest: Manifest, device: Device, opts: LoadOptions, memory: int):
        super().__init__(manifest, device, opts, memory)
        self.tasks = tasks_of(self.metadata.input_shapes, self.metadata.output_shapes)

    def _load_runtime(self) -> Specs:
        tf = _tf()
        if self.opts.threads:  # only before TensorFlow's first op in this process
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(self.opts.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.opts.threads)
        self._where = self._tf_device()
        with tf.device(self._where):
            if self.path.is_dir():
                self._call, specs = load_saved_model(self.path)
            else:
                self._model = load_keras(self.path)
                self._call, specs = keras_call(self._model), keras_specs(self._model)
        self.tasks = tasks_of(*specs)
        return specs

    def _tf_device(self) -> str:
        if self.device == "cpu":
            return "/CPU:0"
        by_id = {device_id: i for i, (device_id, _) in enumerate(gpus())}
        if self.device not in by_id:
            raise DeviceUnavailable(
                f"tensorflow has no {self.device}; available: {', '.join(['cpu', *by_id])}"
            )
        return f"/GPU:{by_id[self.device]}"

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        tf = _tf()
        try:
            with tf.device(self._where):
                return self._call(inputs)
        except (tf.errors.OpError, ValueError, TypeError) as e:
            why = (getattr(e, "message", None) or str(e)).strip().splitlines() or [""]
            raise InferenceError(f"tensorflow: {why[0][:300]}") from e

    def _release(self) -> None:
        super()._release()
        self.__dict__.pop("_call", None)

    async def infer(self, req: Request) -> Result:
        if not isinstance(req, EmbedRequest):
            return await super().infer(req)
        if "embed" not in self.tasks:
            raise UnsupportedTask(
                f"{self.name} is no sentence encoder (one string input of shape [-1], one "
                "float output of rank 2); it only answers infer"
            )
        if self._worker is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        texts = list(req.input)
        count = sum(len(t.split()) for t in texts)  # words, for the limit and the usage
        check_embed_tokens(count, req.max_tokens)
        vectors = await self._worker.call(self._vectors, texts) if texts else []
        return Result(embeddings=vectors, stats=Stats(prompt_eval_count=count))

    def _vectors(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        [given], [wanted] = self.metadata.input_shapes, self.metadata.output_shapes
        feed = {given.name: np.array([t.encode() for t in texts], dtype=object)}
        rows = np.asarray(self._run(feed)[wanted.name], dtype=np.float64)
        if rows.ndim != 2 or len(rows) != len(texts):
            raise InferenceError(
                f"{self.name} gave vectors of shape {list(rows.shape)} for {len(texts)} texts"
            )
        return rows.tolist()  # type: ignore[no-any-return]
