"""The guard against web pages: a server on 127.0.0.1 is reachable from every page the user
visits, so requests a page sends on the user's behalf are refused here, before any route.

- **Cross-site requests.** A browser names the page's origin in ``Origin`` on every
  cross-origin POST, "simple" ``text/plain`` ones included, and says ``Sec-Fetch-Site:
  cross-site`` even where it sends no Origin. Either, naming anything but this server's own
  origin or one of ``cors_origins``, is refused; a top-level navigation (a link to the demo
  page) is not. Clients that are not browsers send neither, so curl's form-encoded ``-d``
  and SDKs keep working whatever their content type.
- **DNS rebinding.** A page whose name the attacker re-points at 127.0.0.1 is same-origin
  with itself, but its requests carry its own name in ``Host``. On a loopback bind only
  loopback names (and ``allowed_hosts``) are accepted; on other binds (a container, behind
  a proxy) the Host check applies when ``allowed_hosts`` is set.

``/health`` is always answered, for probes that send any Host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import Forbidden
from .errors import refuse

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_pattern(origins: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for configured origins; ``*`` matches any run of characters in one."""
    if not origins:
        return None
    parts = [".*".join(map(re.escape, o.split("*"))) for o in origins]
    return re.compile("(?i)" + "|".join(f"(?:{p})" for p in parts))


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SiteGuard:
    """ASGI middleware: Host and Origin checks (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bind_host: str,
        allowed_hosts: Sequence[str] = (),
        origins: Sequence[str] = (),
    ) -> None:
        self.app = app
        names = {h.strip("[]").lower() for h in allowed_hosts}
        if is_loopback(bind_host):
            names |= {*_LOOPBACK_NAMES, bind_host.strip("[]").lower()}
        self.hosts = frozenset(names) if is_loopback(bind_host) or allowed_hosts else None
        self.origins = origin_pattern(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self._check(scope, headers)
        except Forbidden as e:
            await refuse(send, scope["path"], e)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> None:
        host = headers.get("host", "")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            raise Forbidden(
                f"Host {host!r} is not a name of this server (DNS rebinding?); "
                "add it to allowed_hosts (FORGE_ALLOWED_HOSTS) if it is"
            )
        origin = headers.get("origin")
        if origin is not None:
            if not (_same(origin, scope.get("scheme", "http"), host) or self._listed(origin)):
                raise Forbidden(
                    f"requests from the web origin {origin} are refused; add it to "
                    "cors_origins (FORGE_CORS_ORIGINS) to allow it"
                )
        elif headers.get("sec-fetch-site") == "cross-site" and not _navigation(scope, headers):
            raise Forbidden(
                "cross-site requests are refused; add the page's origin to cors_origins"
            )

    def _listed(self, origin: str) -> bool:
        return self.origins is not None and self.origins.fullmatch(origin) is not None


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:80`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _same(origin: str, scheme: str, host: str) -> bool:
    """Whether ``origin`` is this server's own, as reached at ``scheme://host``."""
    try:
        o, own = urlsplit(origin), urlsplit(f"{scheme}://{host}")
        return (o.scheme, o.hostname, o.port or _DEFAULT_PORTS.get(o.scheme)) == (
            own.scheme,
            own.hostname,
            own.port or _DEFAULT_PORTS.get(own.scheme),
        )
    except ValueError:  # a port that is not a number: not ours
        return False


def _navigation(scope: Scope, headers: dict[str, str]) -> bool:
    """A top-level page load (a link followed), which cannot read or change anything."""
    return (
        scope["method"] in ("GET", "HEAD")
        and headers.get("sec-fetch-mode") == "navigate"
        and headers.get("sec-fetch-dest") == "document"
    )
