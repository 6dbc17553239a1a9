"""Model formats and files: detection, header validation, listings and hashing."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import StorageError, UnsupportedFormat
from ..progress import Progress, ProgressCallback, ignore
from ..schema import ModelMetadata
from . import gguf
from .manifest import FileEntry

FORMATS = (
    "gguf (file), onnx (file or folder), safetensors (folder with config.json), "
    "tensorflow (SavedModel folder or .keras file), pytorch (.pt2 torch.export or .pt "
    "TorchScript file), jax (.jaxexport file: a serialized jax.export program)"
)
# file suffixes -> formats, for the formats known by their name alone
_SUFFIXES = {
    ".onnx": "onnx",
    ".keras": "tensorflow",
    ".pt2": "pytorch",
    ".pt": "pytorch",
    ".jaxexport": "jax",
}
_BLOCK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def folder_digest(files: Iterable[FileEntry]) -> str:
    """The sha256 of a folder model: of its ``sha256sum``-style listing, sorted by path."""
    listing = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(listing.encode()).hexdigest()


def detect_format(path: Path, filename: str | None = None) -> str:
    """The model format of a file or folder, from its content and then its name."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(n.endswith(".onnx") for n in names):
            return "onnx"
        if "saved_model.pb" in names:
            return "tensorflow"
        if "config.json" in names and any(n.endswith(".safetensors") for n in names):
            return "safetensors"
        raise UnsupportedFormat(f"unsupported model folder {path}; known formats: {FORMATS}")
    with path.open("rb") as f:
        magic = f.read(4)
    suffix = PurePosixPath(filename or path.name).suffix.lower()
    if magic == gguf.MAGIC or suffix == ".gguf":
        return "gguf"
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise UnsupportedFormat(f"unsupported model file {path}; known formats: {FORMATS}")


def validate(path: Path, fmt: str) -> gguf.GGUFHeader | None:
    """Check a GGUF file's header (InvalidModelFile when bad); other formats pass as is."""
    return gguf.read_header(path) if fmt == "gguf" else None


def metadata_for(path: Path, fmt: str, header: gguf.GGUFHeader | None, size: int) -> ModelMetadata:
    if header is not None:
        return gguf.gguf_metadata(path, header)
    if path.is_dir() and is_cross_encoder(path):  # `forge show` says what it is for
        kind = str(model_config(path).get("model_type") or "")
        return ModelMetadata(
            name=path.name, format=fmt, size=size, architecture=kind, tags=["rerank"]
        )
    return ModelMetadata(name=path.name, format=fmt, size=size)


def check_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not _SHA256.fullmatch(sha256.lower()):
        raise StorageError(f"invalid sha256 {sha256!r}: expected 64 hexadecimal digits")
    return sha256.lower()


def listing(folder: Path) -> list[str]:
    """Relative paths of the regular files in ``folder``, skipping hidden ones."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(root).relative_to(folder)
        found += [(rel / f).as_posix() for f in files if not f.startswith(".")]
    return sorted(found)


def hash_file(path: Path, progress: ProgressCallback) -> str:
    total, done, hasher = path.stat().st_size, 0, hashlib.sha256()
    step, next_event = max(_BLOCK, total // 100), 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
            done += len(block)
            if done >= next_event or done == total:
                progress(Progress(f"hashing {path.name}", total, done))
                next_event = done + step
    return hasher.hexdigest()


def has_file(path: Path, sha256: str) -> bool:
    """Whether a previous, interrupted pull already left this verified file in staging."""
    return path.is_file() and hash_file(path, ignore) == sha256


def max_text_tokens(folder: Path) -> int:
    """The longest input, in tokens, an encoder folder's configs allow (512 if none says):
    what every runtime truncates to, in the engine and in the browser alike."""
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
        ("config.json", "max_position_embeddings"),
    ):
        try:
            value = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return 512


def model_config(folder: Path) -> dict[str, Any]:
    """A model folder's config.json, or ``{}`` when it has none (or not a JSON object)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _architectures(folder: Path) -> list[str]:
    found = model_config(folder).get("architectures")
    return [str(a) for a in found] if isinstance(found, list) else []


def is_decoder(folder: Path) -> bool:
    """Whether config.json names a causal LM architecture (``...ForCausalLM``)."""
    return any(a.endswith("ForCausalLM") for a in _architectures(folder))


def is_cross_encoder(folder: Path) -> bool:
    """Whether config.json names a sequence classifier (``...ForSequenceClassification``):
    a cross-encoder, which scores (query, document) pairs for rerank."""
    return any(a.endswith("ForSequenceClassification") for a in _architectures(folder))


def num_labels(folder: Path) -> int:
    """How many logits a classifier folder's head gives (transformers' default: 2)."""
    config = model_config(folder)
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    n = config.get("num_labels")
    return n if isinstance(n, int) and n > 0 else 2
