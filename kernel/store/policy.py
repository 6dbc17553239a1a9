"""What a pull may reach: server folders, URL hosts, redirects and sizes.

The CLI and in-process engines act for the machine's own user (a ``trusted`` policy): any
path, any host they name, their proxies. The HTTP API pulls for whoever sent the request, so
it builds a ``PullPolicy`` from the settings: paths only under ``pull_paths``, no loopback,
private or link-local address unless ``pull_private_hosts`` allows it, and (with
``pull_hosts``) only the hosts named there. Every hop of a redirect is checked, and the
address a connection goes to is the one checked: the name is resolved once, here, so a DNS
answer cannot change between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import Forbidden, ModelNotFound

if TYPE_CHECKING:
    import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class PullPolicy:
    """The limits of one pull. ``paths=None`` means any path."""

    paths: tuple[Path, ...] | None = None  # folders local files must lie in
    hosts: tuple[str, ...] = ()  # when set, the only hosts URLs may reach
    private_hosts: tuple[str, ...] = ()  # loopback/private/link-local hosts or CIDRs allowed
    max_bytes: int | None = None  # largest download
    trusted: bool = False  # the machine's user: the host it names may be private; env proxies

    @classmethod
    def from_settings(cls, s: Any, *, trusted: bool) -> PullPolicy:
        """The policy ``Settings`` give the machine's user (``trusted``) or the HTTP API."""
        return cls(
            paths=None if trusted else tuple(Path(p).expanduser().resolve() for p in s.pull_paths),
            hosts=tuple(s.pull_hosts),
            private_hosts=tuple(s.pull_private_hosts),
            max_bytes=s.pull_max_bytes,
            trusted=trusted,
        )

    def allowing(self, url: str) -> PullPolicy:
        """This policy, also allowing the host of ``url`` (one the operator configured)."""
        host = urlsplit(url).hostname or ""
        return replace(self, private_hosts=(*self.private_hosts, host)) if host else self

    def named(self, url: str) -> PullPolicy:
        """The policy for a pull of ``url``: a trusted caller may name a private host
        (its own LAN mirror); redirects elsewhere are still checked."""
        return self.allowing(url) if self.trusted else self

    # -- paths ---------------------------------------------------------------------------

    def check_path(self, path: Path) -> Path:
        """``path`` resolved, if it lies under an allowed folder; else ModelNotFound, the
        same whether or not the path exists, so the answer reveals nothing about it."""
        try:
            resolved = path.expanduser().resolve()
        except (ValueError, OSError, RuntimeError):  # a NUL, a lone surrogate, ~nobody
            raise ModelNotFound(repr(str(path))[1:-1][:200], "not a file name") from None
        if self.paths is None or any(resolved.is_relative_to(root) for root in self.paths):
            return resolved
        where = ", ".join(map(str, self.paths)) or "none are allowed; --pull-path DIR"
        raise ModelNotFound(
            str(path),
            f"not a catalog model, a URL, or a file in the folders pulls over HTTP read ({where})",
        )

    # -- URLs ----------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Refuse a URL whose scheme or host name this policy does not allow (no DNS yet)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise Forbidden(f"pulls reach http(s) URLs only, not {parts.scheme or 'this'}:")
        host = parts.hostname or ""
        if not host:
            raise Forbidden("the URL names no host")
        if self.hosts and not _named(host, self.hosts) and _literal(host) is None:
            raise Forbidden(f"URL pulls may reach only {', '.join(self.hosts)} (pull_hosts)")

    def check_address(self, host: str, address: Address) -> None:
        """Refuse connecting to ``address`` (resolved from ``host``) unless allowed."""
        if self.hosts and not (_named(host, self.hosts) or _within(address, self.hosts)):
            raise Forbidden(f"URL pulls may reach only {', '.join(self.hosts)} (pull_hosts)")
        if not _private(address):
            return
        if _named(host, self.private_hosts) or _within(address, self.private_hosts):
            return
        raise Forbidden(
            f"URL pulls may not reach {host} ({address}, a private address); "
            "allow it with pull_private_hosts"
        )

    def client(self, timeout: float, headers: dict[str, str] | None = None) -> httpx.Client:
        """An httpx client that checks every hop and every address against this policy."""
        import httpx

        def hop(request: httpx.Request) -> None:
            self.check_url(str(request.url))

        return httpx.Client(
            transport=_guarded_transport(self),
            timeout=timeout,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            event_hooks={"request": [hop]},
            headers=headers,
            trust_env=self.trusted,  # a proxy connects for us, unchecked: the user's own only
        )


TRUSTED = PullPolicy(trusted=True)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _named(host: str, entries: Iterable[str]) -> bool:
    host = host.lower().strip("[]")
    return any(host == e.lower().strip("[]") for e in entries)


def _within(address: Address, entries: Iterable[str]) -> bool:
    for entry in entries:
        try:
            network: Network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue
        if address in network:
            return True
    return False


def _private(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def _guarded_transport(policy: PullPolicy) -> httpx.HTTPTransport:
    import httpcore
    import httpx

    class Backend(httpcore.SyncBackend):
        """Resolves the host once, checks each address, connects to a checked one."""

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
            for info in infos:
                address = ipaddress.ip_address(info[4][0])
                policy.check_address(host, address)
            first = str(ipaddress.ip_address(infos[0][4][0]))
            return super().connect_tcp(first, port, timeout, local_address, socket_options)

    transport = httpx.HTTPTransport()
    # httpx takes no network backend, so the pool's is replaced (tests/test_pull_policy.py
    # fails if this stops taking effect: a redirect to a private address must not connect).
    transport._pool._network_backend = Backend()
    return transport
