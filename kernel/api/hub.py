"""The engine as a JupyterHub service (``forge serve --hub``; extra ``hub``).

The hub starts the engine with its API token and the service's prefix in the environment
(``JUPYTERHUB_*``) and proxies ``/services/<name>/`` to it, prefix kept. Every request is
authenticated by the hub: a token (``Authorization: token ...`` or ``Bearer ...``) is looked
up with ``HubOAuth.user_for_token(..., sync=False)``, which never blocks the loop. Its
identity model carries the user's name, groups and scopes: the service's access scope
admits, ``hub.admin_scope`` (a custom scope a hub role grants) makes an engine admin, and
the groups' allowlists in ``[hub.groups.<name>]`` say which models the others may use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..access import Access, allowed_models, current_access
from ..errors import ConfigError, Forbidden, MissingExtra, NotFound, Unauthorized
from .auth import Principal
from .keys import PREFIX, Keys

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..config import HubSettings


class HubIdentity:
    """Who a request's hub token belongs to, and what they may do here."""

    def __init__(self, settings: HubSettings, home: Path) -> None:
        try:
            from jupyterhub.services.auth import HubOAuth
        except ImportError as e:
            raise MissingExtra("jupyterhub", "hub") from e
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            raise ConfigError(
                "forge serve --hub runs as a JupyterHub service: start it from the hub "
                "(c.JupyterHub.services), which sets JUPYTERHUB_API_TOKEN"
            )
        self.settings = settings
        self.keys = Keys(home / "usage.sqlite")
        # The hub's answers are cached; a user's new groups count from the next lookup.
        self._hub = HubOAuth(cache_max_age=int(settings.identity_cache))
        name = os.environ.get("JUPYTERHUB_SERVICE_NAME", "forge")
        self._access = set(self._hub.access_scopes) or {
            f"access:services!service={name}",
            "access:services",
        }

    async def authenticate(self, headers: Any) -> tuple[Principal, Access]:
        """The caller of a request with these headers (a hub token, or a personal key made
        at /keys); 401 without a valid one, 403 when a hub token lacks this service."""
        token = _token(headers.get("authorization"))
        if token is None:
            raise Unauthorized("log in through the hub: send 'Authorization: token <hub token>'")
        if token.startswith(PREFIX):
            access = self.keys.access(token)
            if access is None:
                raise Unauthorized("no such personal key (revoked?); make one at /keys")
            return Principal(f"hub:{access.user}", "hub"), access
        user = await self._hub.user_for_token(token, sync=False)
        if not user:
            raise Unauthorized("the hub does not know this token (expired or revoked?)")
        scopes = set(user.get("scopes") or ())
        if not self._hub.check_scopes(self._access, user):
            raise Forbidden(f"{user['name']}'s token lacks {sorted(self._access)[0]}")
        return Principal(f"hub:{user['name']}", "hub"), self.access(user["name"], user, scopes)

    def access(self, name: str, user: dict[str, Any], scopes: set[str]) -> Access:
        groups = frozenset(user.get("groups") or ())
        if self.settings.admin_scope in scopes:
            return Access(name, groups, admin=True)
        names = set(self.settings.default_models)
        for group in groups:
            rule = self.settings.groups.get(group)
            if rule is not None:
                names.update(rule.models)
        return Access(name, groups, admin=False, models=allowed_models(names))


def _token(header: str | None) -> str | None:
    parts = (header or "").split()
    if len(parts) == 2 and parts[0].lower() in ("token", "bearer"):
        return parts[1]
    return None


class ServicePrefix:
    """Serve the app under the hub's service prefix (the proxy keeps it on the path);
    ``/health`` answers at the root too, for the hub's and Kubernetes' probes."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, "/" + prefix.strip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path.startswith(self.prefix) or path == self.prefix[:-1]:
                rest = path[len(self.prefix) - 1 :] or "/"
                root = scope.get("root_path", "") + self.prefix[:-1]
                scope = dict(scope, path=rest, root_path=root)
        await self.app(scope, receive, send)


router = APIRouter(tags=["hub"])


@router.get("/usage", operation_id="hub_usage")
async def usage(request: Request) -> dict[str, Any]:
    """Requests and tokens by user and model: the caller's own, or everyone's for admins."""
    access = current_access.get()
    report = request.app.state.quotas.usage.report(None if access.admin else access.user)
    return {"user": access.user, "admin": access.admin, "usage": report}


class KeyName(BaseModel):
    name: str = Field("key", min_length=1, max_length=100)


@router.get("/keys", operation_id="hub_keys")
async def keys(request: Request) -> list[dict[str, Any]]:
    """The caller's personal keys (never their secrets)."""
    return request.app.state.hub.keys.list(current_access.get().user)  # type: ignore[no-any-return]


@router.post("/keys", operation_id="hub_mint_key", status_code=201)
async def mint(body: KeyName, request: Request) -> dict[str, Any]:
    """A new personal key for outside tools, carrying the caller's identity, groups and
    quotas: its secret is in this answer only."""
    return request.app.state.hub.keys.mint(current_access.get(), body.name)  # type: ignore[no-any-return]


@router.delete("/keys/{key_id}", operation_id="hub_revoke_key")
async def revoke(key_id: str, request: Request) -> dict[str, Any]:
    """Revoke one of the caller's keys; 404 when it has none of that id."""
    if not request.app.state.hub.keys.revoke(current_access.get().user, key_id[:64]):
        raise NotFound(f"no key {key_id[:64]!r} of yours")
    return {"revoked": key_id}
