"""A pure-Python GGUF header reader: metadata, tensor infos and validation, nothing else.

Only the header is parsed (the file is memory-mapped, so tensor data is never read). Large
arrays such as ``tokenizer.ggml.tokens`` are skipped and kept as an :class:`ArrayInfo`.
Any malformed input raises :class:`~ferrousforge.errors.InvalidModelFile` with one line.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidModelFile
from ..schema import ModelMetadata

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ARRAY_KEPT = 64  # arrays longer than this are summarised as ArrayInfo
_MAX_DIMS = 8  # ggml uses 4; anything far above is corruption
_MAX_COUNT = 1 << 20  # keys or tensors; real files have tens to a few thousand
_MAX_BYTES = 1 << 40  # what one string or array may claim before it counts as corruption

# GGUF metadata value types: id -> (name, struct format or "" for variable size)
_VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("uint8", "B"),
    1: ("int8", "b"),
    2: ("uint16", "H"),
    3: ("int16", "h"),
    4: ("uint32", "I"),
    5: ("int32", "i"),
    6: ("float32", "f"),
    7: ("bool", "?"),
    8: ("string", ""),
    9: ("array", ""),
    10: ("uint64", "Q"),
    11: ("int64", "q"),
    12: ("float64", "d"),
}
_STRING, _ARRAY = 8, 9

# ggml tensor types: id -> (name, elements per block, bytes per block), as in ggml.h/ggml.c
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# general.file_type (llama_ftype) -> quantization name
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
_FTYPE_GUESSED = 1024  # llama.cpp flag bit, not part of the type

EMBEDDING_ARCHITECTURES = frozenset(
    [
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "neo-bert",
        "modern-bert",
    ]
)


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """A metadata array too long to keep: its element type name and length."""

    type: str
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to GGUFHeader.data_offset

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        known = GGML_TYPES.get(self.ggml_type)
        return known[0] if known else f"type{self.ggml_type}"

    @property
    def nbytes(self) -> int | None:
        """Size of the tensor's data, or None for a ggml type this reader does not know."""
        known = GGML_TYPES.get(self.ggml_type)
        if known is None:
            return None
        _, block, type_size = known
        return -(-self.n_elements // block) * type_size


@dataclass(slots=True)
class GGUFHeader:
    version: int
    kv: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    alignment: int = DEFAULT_ALIGNMENT
    file_size: int = 0


class _Reader:
    """Bounds-checked little/big-endian reads over a buffer."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.path, self.pos, self.end = buf, path, 0, len(buf)
        self.order = "<"

    def fail(self, what: str) -> InvalidModelFile:
        return InvalidModelFile(f"corrupt GGUF header in {self.path}: {what}")

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise InvalidModelFile(
                f"truncated GGUF header in {self.path}: unexpected end of file at byte {self.pos}"
            )

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def count(self, what: str, min_item_size: int) -> int:
        """A uint64 count; absurd values are corruption, ones past the end truncation."""
        n: int = self.unpack("Q")
        if n * max(min_item_size, 1) > _MAX_BYTES:
            raise self.fail(f"{what} {n} at byte {self.pos - 8} is implausible")
        self.need(n * min_item_size)
        return n

    def string(self) -> str:
        n = self.count("string length", 1)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.count("string length", 1)
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        known = _VALUE_TYPES.get(vtype)
        if known is None:
            raise self.fail(f"unknown value type {vtype} at byte {self.pos - 4}")
        return self.unpack(known[1])

    def array(self) -> list[Any] | ArrayInfo:
        etype: int = self.unpack("I")
        known = _VALUE_TYPES.get(etype)
        if known is None:
            raise self.fail(f"unknown array element type {etype} at byte {self.pos - 4}")
        name, fmt = known
        item = struct.calcsize(fmt) if fmt else 8  # strings/arrays start with a uint64
        n = self.count("array", item)
        if n <= MAX_ARRAY_KEPT:
            return [self.value(etype) for _ in range(n)]
        if fmt:
            self.pos += n * item
        elif etype == _STRING:
            for _ in range(n):
                self.skip_string()
        else:
            for _ in range(n):
                self.array()
        return ArrayInfo(name, n)


def read_header(path: str | Path) -> GGUFHeader:
    """Parse and validate the header of the GGUF file at ``path``.

    Raises InvalidModelFile for a wrong magic, an unsupported version, a truncated or corrupt
    header, or a tensor data section shorter than the tensor infos require.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < 4:
                raise InvalidModelFile(f"not a GGUF file: {path} (only {size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Reader(buf, path), size)
    except OSError as err:
        raise InvalidModelFile(f"cannot read {path}: {err.strerror or err}") from err


def _parse(r: _Reader, size: int) -> GGUFHeader:
    magic = bytes(r.buf[:4])
    if magic != MAGIC:
        raise InvalidModelFile(f"not a GGUF file: {r.path} (no GGUF magic)")  # no bytes shown
    r.pos = 4
    r.need(4)
    raw = bytes(r.buf[4:8])
    r.pos = 8
    version = int.from_bytes(raw, "little")
    if version not in SUPPORTED_VERSIONS and int.from_bytes(raw, "big") in SUPPORTED_VERSIONS:
        r.order, version = ">", int.from_bytes(raw, "big")  # a big-endian file
    if version not in SUPPORTED_VERSIONS:
        raise InvalidModelFile(f"unsupported GGUF version {version} in {r.path} (supported: 2, 3)")
    n_tensors = r.unpack("Q")
    n_kv = r.unpack("Q")
    if n_kv > _MAX_COUNT or n_tensors > _MAX_COUNT:
        raise r.fail(f"counts ({n_kv} keys, {n_tensors} tensors) are implausible")

    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        kv[key] = r.value(r.unpack("I"))

    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims: int = r.unpack("I")
        if n_dims > _MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(int(r.unpack("Q")) for _ in range(n_dims))
        tensors.append(TensorInfo(name, shape, r.unpack("I"), r.unpack("Q")))

    alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-r.pos // alignment) * alignment
    header = GGUFHeader(version, kv, tensors, data_offset, alignment, size)
    _check_data(header, r.path)
    return header


def _check_data(h: GGUFHeader, path: Path) -> None:
    end = h.data_offset
    for t in h.tensors:
        if t.offset % h.alignment:
            raise InvalidModelFile(
                f"corrupt GGUF header in {path}: tensor {t.name!r} offset {t.offset} "
                f"is not aligned to {h.alignment}"
            )
        end = max(end, h.data_offset + t.offset + (t.nbytes or 0))
    if end > h.file_size:
        raise InvalidModelFile(
            f"truncated GGUF file {path}: tensor data needs {end} bytes, file has {h.file_size}"
        )


def quantization_name(header: GGUFHeader) -> str | None:
    """The quantization from ``general.file_type``, else the type holding most elements."""
    ftype = header.kv.get("general.file_type")
    if isinstance(ftype, int) and (ftype & ~_FTYPE_GUESSED) in FILE_TYPES:
        return FILE_TYPES[ftype & ~_FTYPE_GUESSED]
    weights: Counter[str] = Counter()
    for t in header.tensors:
        weights[t.type_name] += t.n_elements
    return weights.most_common(1)[0][0] if weights else None


def gguf_metadata(path: str | Path, header: GGUFHeader | None = None) -> ModelMetadata:
    """ModelMetadata read from a GGUF header (read here unless ``header`` is given)."""
    h = header if header is not None else read_header(path)
    kv = h.kv
    arch = _str(kv.get("general.architecture")) or ""

    def arch_int(key: str) -> int | None:
        value = kv.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    embedding = f"{arch}.pooling_type" in kv or arch in EMBEDDING_ARCHITECTURES
    tokens = kv.get("tokenizer.ggml.tokens")
    extra: dict[str, Any] = {
        "block_count": arch_int("block_count"),
        "embedding_length": arch_int("embedding_length"),
        "head_count": arch_int("attention.head_count"),
        "head_count_kv": arch_int("attention.head_count_kv"),
        "vocab_size": len(tokens) if isinstance(tokens, (list, ArrayInfo)) else None,
        "bos_token_id": kv.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": kv.get("tokenizer.ggml.eos_token_id"),
        "tokenizer": _str(kv.get("tokenizer.ggml.model")),
        "pooling_type": arch_int("pooling_type"),
        "gguf_version": h.version,
    }
    tags = kv.get("general.tags")
    return ModelMetadata(
        name=_str(kv.get("general.name")) or "",
        version=_str(kv.get("general.version")) or "",
        model_type="embedding" if embedding else "llm",
        format="gguf",
        size=h.file_size,
        parameters=sum(t.n_elements for t in h.tensors),
        quantization=quantization_name(h),
        architecture=arch,
        context_size=arch_int("context_length"),
        tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
        description=_str(kv.get("general.description")),
        license=_str(kv.get("general.license")),
        author=_str(kv.get("general.author")) or _str(kv.get("general.organization")),
        chat_template=_str(kv.get("tokenizer.chat_template")),
        extra={k: v for k, v in extra.items() if v is not None},
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
