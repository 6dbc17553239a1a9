"""``forge convert``: derived artifacts as new store entries linked to their source.

``--to onnx``: a safetensors encoder folder, exported with ``torch.onnx.export(dynamo=False)``
(one file, and its graph runs ~30% faster in onnxruntime, DESIGN.md §6). The output's first
output is ``last_hidden_state``; pooling stays outside the graph, so the browser can share it.
No network is used and the source is never changed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from .backends.encoders import TextTokenizer
from .errors import MissingExtra, UnsupportedFormat
from .progress import Progress, ProgressCallback, ignore
from .store.formats import folder_digest, hash_file
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
TARGETS = ("onnx",)


def convert(store: Store, model: str, to: str, progress: ProgressCallback = ignore) -> Manifest:
    """Convert ``model`` and register the result as ``<model>-<to>`` (e.g. minilm:l6-onnx)."""
    if to not in TARGETS:
        raise UnsupportedFormat(f"cannot convert to {to!r}; targets: {', '.join(TARGETS)}")
    src = store.get(model)
    if src.format != "safetensors":
        raise UnsupportedFormat(f"--to onnx reads safetensors folders; {src.name} is {src.format}")
    staging = store.partial / f"convert-{src.sha256[:16]}-{to}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        progress(Progress(f"exporting {src.name} to ONNX"))
        _export_onnx(src.file, staging / "model.onnx")
        for rel in _CARRIED:
            if (src.file / rel).is_file():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.file / rel, staging / rel)
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
        store.blobs.mkdir(parents=True, exist_ok=True)
        if blob.exists():  # converted before: same bytes, keep the old folder
            shutil.rmtree(staging)
        else:
            os.replace(staging, blob)
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
    store.save(manifest)
    progress(Progress("success"))
    return manifest


def _export_onnx(folder: Path, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise MissingExtra(f"{e.name or 'torch'} (for the ONNX export)", "torch") from e
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

    class Encoder(torch.nn.Module):  # type: ignore[misc]
        """Keyword arguments in, last hidden state out: immune to forward()'s arg order."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    batch = TextTokenizer(folder).encode(["a sample sentence", "and a second, longer one"])
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    tensors = tuple(torch.from_numpy(getattr(batch, n)) for n in inputs)
    axes = {n: {0: "batch", 1: "tokens"} for n in (*inputs, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that dynamo is newer
        torch.onnx.export(
            Encoder().eval(),
            tensors,
            str(out),
            input_names=list(inputs),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
