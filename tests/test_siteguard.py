"""No web page can turn the server against its user: cross-site requests, DNS rebinding and
content types, on every route that changes something, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferrousforge as ff
from ferrousforge.api.app import create_app
from ferrousforge.store.store import Store

from .apiserver import Running, running
from .nullmodels import add_null_model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "echo:1", {})
    settings = ff.Settings(home=home, cors_origins=["https://app.example", "http://localhost:*"])
    with running(settings) as srv:
        yield srv


def mutating_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the API that takes a body: what a page could POST to."""
    engine = ff.AsyncEngine(ff.Settings(home=Path("/nonexistent-forge-home")))
    paths = create_app(engine.settings, engine).openapi()["paths"]
    return sorted(
        (method.upper(), path.replace("{model_id}", "x"))
        for path, item in paths.items()
        for method in item
        if method in ("post", "delete", "put", "patch")
    )


ROUTES = mutating_routes()


def send(srv: Running, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, srv.url + path, timeout=30, **kw)


def test_every_mutating_route_is_listed() -> None:
    paths = {p for _, p in ROUTES}
    assert {
        "/api/copy",
        "/api/delete",
        "/api/pull",
        "/api/generate",
        "/v1/chat/completions",
    } <= paths
    assert len(ROUTES) >= 13


# what a page on another site can send without a CORS preflight: text/plain, form, multipart
SIMPLE = [
    {"content-type": "text/plain"},
    {"content-type": "application/x-www-form-urlencoded"},
    {"content-type": "multipart/form-data; boundary=x"},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("simple", SIMPLE, ids=["text", "form", "multipart"])
def test_cross_site_requests_are_refused(
    server: Running, method: str, path: str, simple: dict[str, str]
) -> None:
    body = '{"model": "echo:1", "source": "echo:1", "destination": "gone"}'
    for headers in (
        {"origin": "https://evil.test"},
        {"origin": "null"},  # sandboxed frames and file:// pages
        {"origin": "http://127.0.0.1:1"},  # another port of this host is another origin
        {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"},  # no Origin sent
    ):
        r = send(server, method, path, content=body, headers=simple | headers)
        assert r.status_code == 403, (method, path, headers, r.text)
        assert "refused" in r.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_dns_rebinding_hosts_are_refused(server: Running, method: str, path: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in ("evil.test", f"evil.test:{port}", "127.0.0.1.evil.test", "localhost.evil"):
        r = send(server, method, path, json={}, headers={"host": host})
        assert r.status_code == 403 and "Host" in r.text, (host, r.text)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_clients_without_a_page_are_served_whatever_their_content_type(
    server: Running, method: str, path: str
) -> None:
    """curl -d (form-encoded) and SDKs that name no content type send no Origin."""
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        r = send(server, method, path, content=b"{}", headers=headers)
        assert r.status_code not in (403, 415) and r.status_code < 500, (path, r.text)


def test_same_origin_pages_and_configured_origins_are_served(server: Running) -> None:
    port = server.url.rsplit(":", 1)[1]
    body = {"model": "echo:1", "prompt": "a", "stream": False}
    for origin in (
        server.url,
        f"http://localhost:{port}",  # the same server reached by another loopback name
        "https://app.example",
        "http://localhost:5173",  # matches http://localhost:*
    ):
        host = f"localhost:{port}" if "localhost" in origin and port in origin else None
        headers = {"origin": origin} | ({"host": host} if host else {})
        r = send(server, "POST", "/api/generate", json=body, headers=headers)
        assert r.status_code == 200, (origin, r.text)
    r = send(server, "OPTIONS", "/api/chat", headers={
        "origin": "https://app.example", "access-control-request-method": "POST"})  # fmt: skip
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_loopback_names_and_navigations(server: Running) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in ("localhost", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert send(server, "GET", "/api/tags", headers={"host": host}).status_code == 200
    assert send(server, "GET", "/health", headers={"host": "evil.test"}).status_code == 200
    link = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate",
            "sec-fetch-dest": "document"}  # fmt: skip
    assert send(server, "GET", "/api/version", headers=link).status_code == 200
    framed = link | {"sec-fetch-dest": "iframe"}
    assert send(server, "GET", "/api/version", headers=framed).status_code == 403
    fetched = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"}
    assert send(server, "GET", "/api/tags", headers=fetched).status_code == 403


def test_a_page_cannot_delete_a_model_by_copying_over_it(tmp_path: Path) -> None:
    """The reported attack: a text/plain POST to /api/copy from another site replaced the
    destination, whose blob the store then deleted."""
    blob = tmp_path / "blobs" / "sha256-kept"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"the user's model")
    victim = add_null_model(tmp_path, "victim:1", {})
    Store(tmp_path).save(victim.model_copy(update={"path": str(blob), "managed": True}))
    add_null_model(tmp_path, "echo:1", {})
    with running(ff.Settings(home=tmp_path)) as srv:
        attack = '{"source": "echo:1", "destination": "victim:1"}'
        headers = {"content-type": "text/plain", "origin": "https://evil.test"}
        assert httpx.post(srv.url + "/api/copy", content=attack, headers=headers).status_code == 403
        assert blob.read_bytes() == b"the user's model"
        r = httpx.get(srv.url + "/api/tags", headers={"host": "evil.test"})  # rebinding reads
        assert r.status_code == 403 and "victim" not in r.text


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [([], "anything.example", 200), (["forge.internal"], "forge.internal", 200),
     (["forge.internal"], "anything.example", 403)],
)  # fmt: skip
async def test_other_binds_check_hosts_only_when_told(
    tmp_path: Path, allowed: list[str], host: str, status: int
) -> None:
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path, host="0.0.0.0", allowed_hosts=allowed))
    transport = httpx.ASGITransport(app=create_app(engine.settings, engine))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        assert (await client.get("/api/version")).status_code == status
