"""``forge convert``: derived artifacts as new store entries linked to their source.

``--to onnx``: a safetensors encoder folder, exported with ``torch.onnx.export(dynamo=False)``
(one file, and its graph runs ~30% faster in onnxruntime, DESIGN.md §6). The output's first
output is ``last_hidden_state``; pooling stays outside the graph, so the browser can share it.
A cross-encoder (``...ForSequenceClassification``) is exported with its head: ``logits``.
``--to tvm``: that ONNX graph compiled with TVM Relax for a target and a set of static
shapes (``tvm_compile``), as an entry holding the graph and ``tvm.json``.
No network is used and the source is never changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .backends.encoders import TextTokenizer
from .errors import MissingExtra, UnsupportedFormat
from .progress import Progress, ProgressCallback, ignore
from .store.formats import folder_digest, hash_file, is_cross_encoder
from .store.manifest import FileEntry, Manifest
from .store.names import parse_name
from .store.store import Store

# what an ONNX folder keeps from its source, beside the graph
_CARRIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)
TARGETS = ("onnx", "tvm")
SOURCES = {"onnx": ("safetensors",), "tvm": ("safetensors", "onnx")}  # what each converts
TVM_SHAPES = ((1, 16), (1, 32), (1, 64), (1, 128), (8, 16), (8, 32), (8, 64), (8, 128))


def convert(
    store: Store,
    model: str,
    to: str,
    progress: ProgressCallback = ignore,
    *,
    target: str = "llvm",
    tune: int = 0,
    shapes: Sequence[tuple[int, int]] = TVM_SHAPES,
) -> Manifest:
    """Convert ``model`` and register the result as ``<model>-<to>`` (e.g. minilm:l6-onnx).

    ``--to tvm`` goes through the ONNX entry (made first when missing), compiles ``shapes``
    for ``target`` into the store's cache, tuning each with ``tune`` trials when > 0.
    """
    if to not in TARGETS:
        raise UnsupportedFormat(f"cannot convert to {to!r}; targets: {', '.join(TARGETS)}")
    src = store.get(model)
    if to == "tvm":
        return _convert_tvm(store, src, target, tune, shapes, progress)
    if src.format != "safetensors":
        raise UnsupportedFormat(f"--to onnx reads safetensors folders; {src.name} is {src.format}")

    def fill(staging: Path) -> None:
        progress(Progress(f"exporting {src.name} to ONNX"))
        _export_onnx(src.file, staging / "model.onnx")
        _carry(src.file, staging)

    return _register(store, src, to, fill, progress)


def _convert_tvm(
    store: Store,
    src: Manifest,
    target: str,
    tune: int,
    shapes: Sequence[tuple[int, int]],
    progress: ProgressCallback,
) -> Manifest:
    if is_cross_encoder(src.file if src.file.is_dir() else src.file.parent):
        raise UnsupportedFormat(
            f"{src.name} is a cross-encoder; the tvm backend runs embedding models only"
        )
    from .backends.tvm_backend import SPEC, source_of
    from .backends.tvm_compile import Cache, parse_target

    tvm_target = parse_target(target)
    if src.format == "onnx":
        graph = src
    elif src.format == "safetensors":
        derived = [m for m in store.derived(src.name) if m.format == "onnx"]
        graph = derived[0] if derived else convert(store, src.name, "onnx", progress)
    else:
        raise UnsupportedFormat(f"--to tvm reads safetensors or ONNX; {src.name} is {src.format}")
    source = source_of(graph)
    cache = Cache(store.home / "cache" / "tvm", source, tvm_target)
    for shape in shapes:  # compile before registering: a failure leaves no entry
        cache.build(shape, tune, progress)

    def fill(staging: Path) -> None:
        try:  # blobs are immutable: a hard link shares the graph's bytes
            os.link(source.path, staging / "model.onnx")
        except OSError:
            shutil.copyfile(source.path, staging / "model.onnx")
        _carry(source.path.parent, staging)
        spec = {"target": tvm_target, "shapes": [list(s) for s in shapes], "trials": tune}
        (staging / SPEC).write_text(json.dumps(spec, indent=2) + "\n")

    return _register(store, src, "tvm", fill, progress)


def _carry(folder: Path, staging: Path) -> None:
    for rel in _CARRIED:
        if (folder / rel).is_file():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, staging / rel)


def _register(
    store: Store,
    src: Manifest,
    to: str,
    fill: Callable[[Path], None],
    progress: ProgressCallback,
) -> Manifest:
    """Fill a staging folder, move it into the blobs by its digest, save the manifest."""
    staging = store.partial / f"convert-{src.sha256[:16]}-{to}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
        files = [
            FileEntry(
                path=p.relative_to(staging).as_posix(),
                sha256=hash_file(p, progress),
                size=p.stat().st_size,
            )
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        ]
        digest = folder_digest(files)
        blob = store.blobs / f"sha256-{digest}"
        if blob.exists():  # converted before: same bytes, keep the old folder
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    name = parse_name(src.name)
    target = str(dataclasses.replace(name, tag=f"{name.tag}-{to}"))
    metadata = src.metadata.model_copy(update={"name": target, "format": to})
    manifest = Manifest(
        name=target,
        source=f"convert:{src.name}",
        format=to,
        path=str(blob),
        sha256=digest,
        size=sum(f.size for f in files),
        files=files,
        metadata=metadata,
        parent=src.name,
    )
    if staging.exists():
        store.commit(staging, blob, manifest)
    else:
        store.save(manifest)
    progress(Progress("success"))
    return manifest


def _export_onnx(folder: Path, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"{e.name or 'torch'} (for the ONNX export)", "torch") from e
    from .backends.torch_backend import traceable_encoder

    encoder = traceable_encoder(folder)
    batch = TextTokenizer(folder).encode(["a sample sentence", "and a second, longer one"])
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    tensors = tuple(torch.from_numpy(getattr(batch, n)) for n in inputs)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in inputs}
    output = "logits" if is_cross_encoder(folder) else "last_hidden_state"
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that dynamo is newer
        torch.onnx.export(
            encoder,
            tensors,
            str(out),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
