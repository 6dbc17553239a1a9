"""Backend discovery. Built-ins register through the same entry-point group as plugins."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError, MissingExtra, UnsupportedFormat
from ..mold import Backend, Device
from ..plugins import load_group
from ..store.manifest import Manifest
from ..store.names import parse_name

if TYPE_CHECKING:
    from ..store.store import Store

GROUP = "ferrousforge.backends"
log = logging.getLogger(__name__)


class Backends:
    """The backends installed here, by name, in entry-point order."""

    def __init__(self, backends: list[Backend]) -> None:
        self._by_name = {b.name: b for b in backends}

    @classmethod
    def discover(cls) -> Backends:
        return cls([backend for _, backend in load_group(GROUP)])

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def add(self, backend: Backend) -> Backend | None:
        """Add ``backend`` (a custom model registered at run time); one of the same name is
        replaced, in its place, and returned."""
        old = self._by_name.get(backend.name)
        self._by_name[backend.name] = backend
        return old

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Backend:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(
                f"unknown backend {name!r}; installed: {', '.join(self._by_name)}"
            ) from None

    def for_format(self, fmt: str) -> Backend:
        """The first available backend that reads ``fmt`` (seed §2.4, format → backend).
        One whose ``automatic`` is false (jax) comes last: it runs what is asked of it by
        name, and is the default only where no other reader is installed."""
        readers = [b for b in self._by_name.values() if fmt in b.formats]
        readers.sort(key=lambda b: not getattr(b, "automatic", True))  # stable: else in order
        for b in readers:
            if b.available():
                return b
        if readers:
            b = readers[0]
            raise MissingExtra(f"the {b.name} backend for {fmt} models", extra_for(b.name))
        known = sorted({f for b in self._by_name.values() for f in b.formats})
        raise UnsupportedFormat(f"no backend reads {fmt!r} models; known formats: {known}")

    def devices(self) -> list[Device]:
        """Every device any available backend can use, merged by id."""
        merged: dict[str, Device] = {}
        for b in self._by_name.values():
            if not b.available():
                continue
            for d in b.devices():
                old = merged.get(d.id)
                if old is None:
                    merged[d.id] = d
                else:
                    merged[d.id] = Device(
                        d.id,
                        old.name or d.name,
                        old.memory_total or d.memory_total,
                        old.memory_free if old.memory_free is not None else d.memory_free,
                        tuple(dict.fromkeys(old.backends + d.backends)),
                    )
        return list(merged.values())


def provide(store: Store, backend: Backend) -> None:
    """Store the entries of the models ``backend`` serves with no files of their own (a
    custom backend's ``provides()``), unless another model has the name."""
    provides = getattr(backend, "provides", None)
    found: list[Manifest] = provides() if callable(provides) else []
    for manifest in found:
        old = store.read(parse_name(manifest.name))
        if old is None or (
            old.source == manifest.source
            and old.model_dump(exclude={"created_at"})
            != manifest.model_dump(exclude={"created_at"})
        ):
            store.save(manifest)
        elif old.source != manifest.source:
            log.warning(
                "%s names another model: the %s backend's is not stored", old.name, backend.name
            )


def extra_for(backend: str) -> str:
    """The pip extra that installs ``backend``'s runtime."""
    return {"llama_cpp": "llama"}.get(backend, backend)  # the others are named as extras
