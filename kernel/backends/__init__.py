"""Backend discovery. Built-ins register through the same entry-point group as plugins."""

from __future__ import annotations

import logging

from ..errors import ConfigError, MissingExtra, UnsupportedFormat
from ..mold import Backend, Device
from ..plugins import load_group

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
        """The first available backend that reads ``fmt`` (seed §2.4, format → backend)."""
        readers = [b for b in self._by_name.values() if fmt in b.formats]
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


def extra_for(backend: str) -> str:
    """The pip extra that installs ``backend``'s runtime."""
    return {"llama_cpp": "llama"}.get(backend, backend)  # the others are named as extras
