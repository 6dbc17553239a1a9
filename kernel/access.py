"""What the caller of a request may do: which models it may use, and whether it may change
the engine (pull, remove, copy, load, unload).

The HTTP layer sets the caller's ``Access`` for each request (``current_access``); the
engine checks it where every inference passes (its lease), and listing routes filter by
it. Outside a request (scripts, notebooks, the CLI) nothing is set and everything is
allowed, as for the engine's own API keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import Forbidden, InvalidModelName


@dataclass(frozen=True, slots=True)
class Access:
    """A caller's rights: ``models`` None allows every model."""

    user: str
    groups: frozenset[str] = frozenset()
    admin: bool = True
    models: frozenset[str] | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or _key(model) in self.models

    def require_model(self, model: str) -> None:
        """Raise Forbidden (403) naming ``model`` unless the caller may use it."""
        if not self.allows(model):
            groups = ", ".join(sorted(self.groups)) or "no group"
            raise Forbidden(f"{self.user} may not use {model} (allowed for {groups}: see /models)")

    def require_admin(self, action: str) -> None:
        """Raise Forbidden (403) unless the caller administers this engine."""
        if not self.admin:
            raise Forbidden(f"{self.user} may not {action}: it needs the engine's admin scope")


EVERYONE = Access("local")
current_access: ContextVar[Access] = ContextVar("forge_access", default=EVERYONE)


def allowed_models(names: Iterable[str]) -> frozenset[str]:
    """Model names as the store keys them (``tiny`` is ``tiny:latest``)."""
    return frozenset(_key(n) for n in names)


def _key(model: str) -> str:
    from .store.names import parse_name

    try:
        return str(parse_name(model))
    except InvalidModelName:  # a name the store would refuse is allowed by no list
        return model
