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

import base64
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from ..access import Access, allowed_models, current_access
from ..errors import ConfigError, Forbidden, MissingExtra, NotFound, Unauthorized
from . import hub_pages as pages
from .auth import Principal
from .keys import PREFIX, Keys
from .usage import LEDGER

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
        self.keys = Keys(home / LEDGER)
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
        token = _token(headers.get("authorization")) or _cookie(headers.get("cookie"), TOKEN)
        token = token or headers.get("x-api-key")  # Anthropic's clients send their key so
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
        if not self._hub.check_scopes(self._access, user):
            raise Forbidden(f"{user['name']}'s token lacks {sorted(self._access)[0]}")
        return Principal(f"hub:{user['name']}", "hub"), self.access(user)

    def login(self, next_path: str) -> tuple[str, str]:
        """Where to send a browser to log in through the hub, and the state cookie's value
        that the callback checks (with PKCE: the code is useless without the verifier)."""
        state = secrets.token_urlsafe(24)
        verifier, challenge, method = self._hub.generate_pkce_code_challenge()
        query = urlencode(
            {
                "client_id": self._hub.oauth_client_id,
                "redirect_uri": self._hub.oauth_redirect_uri,
                "response_type": "code",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": method,
            }
        )
        cookie = json.dumps({"state": state, "verifier": verifier, "next": next_path})
        return f"{self._hub.oauth_authorization_url}?{query}", _b64(cookie)

    async def finish_login(self, code: str, state: str, cookie: str | None) -> tuple[str, str]:
        """The hub token for ``code`` and the page to go back to; 403 on a state that does
        not match the browser's cookie (a forged or replayed callback)."""
        try:
            saved = json.loads(base64.urlsafe_b64decode((cookie or "").encode()))
        except ValueError:
            saved = {}
        if not isinstance(saved, dict) or not hmac.compare_digest(
            str(saved.get("state", "")), state
        ):
            raise Forbidden("this login did not start here (state mismatch): open the page again")
        token = await self._hub.token_for_code(
            code, code_verifier=saved.get("verifier"), sync=False
        )
        return token, str(saved.get("next") or "")

    def access(self, user: dict[str, Any]) -> Access:
        """The rights of the hub's identity model ``user``: its groups' models, or all of
        them with the admin scope."""
        name, groups = user["name"], frozenset(user.get("groups") or ())
        if self.settings.admin_scope in (user.get("scopes") or ()):
            return Access(name, groups, admin=True)
        names = set(self.settings.default_models)
        for group in groups:
            rule = self.settings.groups.get(group)
            if rule is not None:
                names.update(rule.models)
        return Access(name, groups, admin=False, models=allowed_models(names))


TOKEN, STATE = "forge-hub-token", "forge-hub-oauth-state"  # the service's cookies


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def _cookie(header: str | None, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header or "")
    except CookieError:
        return None
    return jar[name].value if name in jar else None


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
login_router = APIRouter(include_in_schema=False)  # no guard: the way in


def wants_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def login_redirect(request: Request, hub: HubIdentity) -> HTTPException:
    """A browser without identity goes to the hub's login, and comes back where it was."""
    here = request.scope.get("root_path", "") + request.scope["path"]
    if request.url.query:
        here += "?" + request.url.query
    url, state = hub.login(here)
    prefix = request.scope.get("root_path", "") or "/"
    cookie = f"{STATE}={state}; Path={prefix}; HttpOnly; SameSite=Lax; Max-Age=600"
    return HTTPException(302, "log in through the hub", {"Location": url, "Set-Cookie": cookie})


@login_router.get("/oauth_callback")
async def oauth_callback(
    request: Request,
    code: str = Query(max_length=1024),
    state: str = Query(max_length=1024),
) -> Response:
    """The end of the hub's OAuth login: the token goes in a cookie for this service only."""
    hub: HubIdentity = request.app.state.hub
    token, back = await hub.finish_login(code, state, request.cookies.get(STATE))
    prefix = (request.scope.get("root_path", "") or "").rstrip("/") + "/"
    if not back.startswith(prefix):  # never an open redirect
        back = prefix + "keys"
    answer = RedirectResponse(back, status_code=302)
    https = request.url.scheme == "https"
    answer.set_cookie(TOKEN, token, path=prefix, httponly=True, samesite="lax", secure=https)
    answer.delete_cookie(STATE, path=prefix)
    return answer


@router.get("/usage", operation_id="hub_usage")
async def usage(request: Request) -> Any:
    """Requests and tokens by user and model: the caller's own, or everyone's for admins
    (a page for browsers)."""
    access = current_access.get()
    report = request.app.state.quotas.usage.report(None if access.admin else access.user)
    if wants_page(request):
        return HTMLResponse(pages.usage(access.user, report))
    return {"user": access.user, "admin": access.admin, "usage": report}


class KeyName(BaseModel):
    name: str = Field("key", min_length=1, max_length=100)


@router.get("/keys", operation_id="hub_keys")
async def keys(request: Request) -> Any:
    """The caller's personal keys (never their secrets); a page to make and revoke them for
    browsers."""
    user = current_access.get().user
    found = request.app.state.hub.keys.list(user)
    return HTMLResponse(pages.keys(user, found)) if wants_page(request) else found


@router.post("/keys", operation_id="hub_mint_key", status_code=201)
async def mint(body: KeyName, request: Request) -> dict[str, Any]:
    """A new personal key for outside tools, carrying the caller's identity, groups and
    quotas: its secret is in this answer only."""
    return request.app.state.hub.keys.mint(current_access.get(), body.name)  # type: ignore[no-any-return]


@router.delete("/keys/{key_id}", operation_id="hub_revoke_key")
async def revoke(request: Request, key_id: str = FastPath(max_length=64)) -> dict[str, Any]:
    """Revoke one of the caller's keys; 404 when it has none of that id."""
    if not request.app.state.hub.keys.revoke(current_access.get().user, key_id):
        raise NotFound(f"no key {key_id!r} of yours")
    return {"revoked": key_id}
