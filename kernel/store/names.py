"""Model names: ``[namespace/]model[:tag]``, case-insensitive, default tag ``latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import InvalidModelName

DEFAULT_TAG = "latest"
DEFAULT_NAMESPACE = "library"  # where un-namespaced manifests live; "library/x" is "x"
MAX_PART = 64
MAX_NAME = 128

_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")
_RULES = (
    "names are [namespace/]model[:tag]; each part starts with a letter or digit, uses only "
    f"letters, digits, '.', '_', '-', is at most {MAX_PART} characters (whole name {MAX_NAME})"
)


@dataclass(frozen=True, slots=True)
class ModelName:
    """A validated, lower-cased model name."""

    model: str
    tag: str = DEFAULT_TAG
    namespace: str | None = None

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.model}" if self.namespace else self.model
        return f"{base}:{self.tag}"


def parse_name(name: str | ModelName, *, default_tag: str = DEFAULT_TAG) -> ModelName:
    """Validate and normalise ``name``; raise InvalidModelName with the rules otherwise."""
    if isinstance(name, ModelName):
        return name
    if not name or len(name) > MAX_NAME:
        raise InvalidModelName(f"invalid model name {name!r}: {_RULES}")
    s = name.lower()
    base, sep, tag = s.partition(":")
    if not sep:
        tag = default_tag
    ns, slash, model = base.rpartition("/")
    namespace = _part(ns, name) if slash else None
    if namespace == DEFAULT_NAMESPACE:
        namespace = None
    return ModelName(_part(model, name), _part(tag, name), namespace)


def _part(part: str, whole: str) -> str:
    if len(part) > MAX_PART or not _PART.fullmatch(part) or ".." in part:
        raise InvalidModelName(f"invalid model name {whole!r}: {_RULES}")
    return part


def sanitize(stem: str) -> str:
    """A valid model part made from arbitrary text (a file stem, a URL segment)."""
    s = re.sub(r"[^a-z0-9._-]+", "-", stem.lower())
    s = re.sub(r"\.{2,}", ".", s).lstrip("._-")[:MAX_PART].rstrip("._-")
    return s or "model"


def manifest_relpath(name: ModelName) -> PurePosixPath:
    """``manifests/<namespace or library>/<model>/<tag>.json``, always inside the store."""
    parts = (name.namespace or DEFAULT_NAMESPACE, name.model, name.tag)
    for p in parts:  # a ModelName built by hand bypasses parse_name
        _part(p, str(name))
    return PurePosixPath("manifests", parts[0], parts[1], f"{parts[2]}.json")
