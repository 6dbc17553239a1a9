"""The Jupyter server extension in a real `jupyter server` on 127.0.0.1: its routes need
Jupyter's token (and, for cookie-authenticated POSTs, its XSRF token), stream through, and the
kernels it starts find the engine by themselves. Its handlers also run in-process over a fake
engine, for what the real one cannot be made to do (fail, echo the query it got)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MakeGGUF
from .kernels import run_in_kernel
from .labharness import free_port, jupyter_server
from .nullmodels import add_null_model

pytest.importorskip("jupyter_server", reason="the jupyter extra is not installed")
TOKEN = "forge-test-token"


@dataclass
class Server:
    url: str
    home: Path
    root: Path  # Jupyter's root_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home, root = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("root")
    add_null_model(home, "echo:1", {})
    add_null_model(home, "slow:1", {"reply": " ".join(["tick"] * 300), "token_delay": 0.02})
    add_null_model(home, "crash:1", {"abort_load": True})
    # the old module name, as installed configs hold it: the forwarder must keep working
    with jupyter_server(home, root, TOKEN, "ferrousforge.jupyter_ext") as url:
        yield Server(url, home, root)


def auth() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


def test_routes_need_the_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/forge/api/tags").status_code == 403
    assert httpx.post(f"{server.url}/forge/api/chat", json={"model": "echo:1"}).status_code == 403
    assert httpx.get(f"{server.url}/forge/ui").status_code in (302, 403)  # to the login page
    tags = httpx.get(f"{server.url}/forge/api/tags", headers=auth())
    assert tags.status_code == 200
    assert {m["name"] for m in tags.json()["models"]} == {"crash:1", "echo:1", "slow:1"}


def test_cookie_posts_need_jupyters_xsrf_token_whatever_authorization_they_carry(
    server: Server,
) -> None:
    body = {"model": "echo:1", "prompt": "hi", "stream": False}
    with httpx.Client(base_url=server.url) as browser:
        assert browser.get("/login").status_code == 200  # sets the _xsrf cookie
        assert browser.get("/api/status", params={"token": TOKEN}).status_code == 200  # logs in
        bogus = {"Authorization": "Bearer x"}  # what a cross-site page can add
        forged = browser.post("/forge/api/generate", json=body, headers=bogus)
        assert forged.status_code == 403 and "_xsrf" in forged.json()["message"]
        xsrf = {**bogus, "X-XSRFToken": browser.cookies["_xsrf"]}
        same_site = browser.post("/forge/api/generate", json=body, headers=xsrf)
        assert same_site.status_code == 200 and same_site.json()["done"] is True
    scripted = httpx.post(f"{server.url}/forge/api/generate", json=body, headers=auth())
    assert scripted.status_code == 200  # a valid Jupyter token needs no XSRF token


def test_streams_pass_through_and_errors_keep_their_status(server: Server) -> None:
    body = {"model": "echo:1", "messages": [{"role": "user", "content": "a b c"}]}
    with httpx.stream("POST", f"{server.url}/forge/api/chat", json=body, headers=auth()) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert len(lines) == 4 and lines[-1]["done"] is True
    assert "".join(x["message"]["content"] for x in lines).split() == ["a", "b", "c"]
    missing = httpx.post(
        f"{server.url}/forge/api/generate", json={"model": "nope", "prompt": "x"}, headers=auth()
    )
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_ui_lists_models_and_devices(server: Server) -> None:
    page = httpx.get(f"{server.url}/forge/ui", headers=auth(), timeout=120)  # runtimes probe
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "echo:1" in page.text and "<td>cpu</td>" in page.text


def test_kernels_find_the_engine_without_configuration(server: Server) -> None:
    code = (
        "from ferrousforge import notebook\n"
        "e = notebook.shared()\n"
        "print(type(e).__name__, sorted(m.name for m in e.list()))\n"
        "print(e.load('echo:1', keep_alive='1h').name)\n"
    )
    out = asyncio.run(run_in_kernel(server.url, TOKEN, code))
    assert out.splitlines() == ["RemoteEngine ['crash:1', 'echo:1', 'slow:1']", "echo:1"], out
    # the kernel loaded it into the server's engine: one copy, seen by everyone
    loaded = httpx.get(f"{server.url}/forge/api/ps", headers=auth()).json()["models"]
    assert [m["name"] for m in loaded] == ["echo:1"]


def test_kernels_pull_files_under_the_root_by_relative_path(
    server: Server, make_small_gguf: MakeGGUF
) -> None:
    make_small_gguf(server.root / "models" / "small.gguf")
    code = (
        "import os\n"
        f"os.chdir({str(server.root / 'models')!r})\n"  # a notebook's folder, not the server's
        "from ferrousforge import notebook\n"
        "m = notebook.shared().pull('./small.gguf')\n"
        "print(m.name, m.path)\n"
    )
    out = asyncio.run(run_in_kernel(server.url, TOKEN, code))
    assert out.split() == ["small:latest", str((server.root / "models/small.gguf").resolve())], out
    tags = httpx.get(f"{server.url}/forge/api/tags", headers=auth()).json()["models"]
    assert "small:latest" in {m["name"] for m in tags}
    gone = httpx.request(
        "DELETE", f"{server.url}/forge/api/delete", json={"model": "small"}, headers=auth()
    )
    assert gone.status_code == 200


# The extension only sets pull_paths; the refusal is the engine's (its HTTP pull policy).
def test_pulls_of_files_outside_the_root_are_refused(
    server: Server, make_small_gguf: MakeGGUF, tmp_path: Path
) -> None:
    outside = make_small_gguf(tmp_path / "outside.gguf")
    body = {"model": str(outside), "stream": False}
    r = httpx.post(f"{server.url}/forge/api/pull", json=body, headers=auth(), timeout=60)
    assert r.status_code == 404, r.text  # the same whether it exists or not: no oracle
    assert str(server.root) in r.json()["error"] and "folders pulls over HTTP read" in r.text
    assert not (server.home / "manifests/library/outside").exists()


# -- the handlers in-process, over a fake engine -------------------------------------------


Engine = Callable[[str], tuple[int, dict[str, Any]]]  # a request's URI -> status, JSON


@dataclass
class FakeBackend:
    url: str
    key: str = "engine-key"


@contextlib.asynccontextmanager
async def extension(engine: Engine | None) -> AsyncIterator[str]:
    """The extension's handlers under Jupyter's token auth, over a fake engine answering
    every GET with ``engine`` (None: an engine that is not there). Yields their base URL."""
    from jupyter_server.auth.authorizer import AllowAllAuthorizer
    from jupyter_server.auth.identity import IdentityProvider
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from ferrousforge.notebook.jupyter_ext import ProxyHandler, UiHandler

    servers: list[HTTPServer] = []

    def serve(app: web.Application) -> str:
        sockets = bind_sockets(0, "127.0.0.1")
        servers.append(HTTPServer(app))
        servers[-1].add_sockets(sockets)
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    class Upstream(web.RequestHandler):
        def get(self) -> None:
            assert engine is not None
            status, body = engine(self.request.uri or "")
            self.set_status(status)
            self.finish(body)

    url = serve(web.Application([(r"/.*", Upstream)])) if engine else None
    backend = FakeBackend(url or f"http://127.0.0.1:{free_port()}")
    handlers: list[Any] = [
        (r"/forge/ui", UiHandler, {"backend": backend}),
        (r"/forge/(.*)", ProxyHandler, {"backend": backend}),
    ]
    app = web.Application(
        handlers,
        identity_provider=IdentityProvider(token=TOKEN),
        authorizer=AllowAllAuthorizer(),
        cookie_secret=b"0" * 32,
    )
    try:
        yield serve(app)
    finally:
        for server in servers:
            server.stop()
            await server.close_all_connections()


async def test_the_jupyter_token_is_not_passed_to_the_engine() -> None:
    seen: list[str] = []

    def echo(uri: str) -> tuple[int, dict[str, Any]]:
        seen.append(uri)
        return 200, {}

    async with extension(echo) as url, httpx.AsyncClient() as client:
        query = f"a=1&token={TOKEN}&b=&c=%20d+e&tokens=x"
        assert (await client.get(f"{url}/forge/api/tags?{query}")).status_code == 200
        assert (await client.get(f"{url}/forge/api/tags?token={TOKEN}")).status_code == 200
    assert seen == ["/api/tags?a=1&b=&c=%20d+e&tokens=x", "/api/tags"]


async def test_the_ui_shows_engine_errors_as_a_page() -> None:
    def broken(uri: str) -> tuple[int, dict[str, Any]]:
        return 500, {"error": "the store at /x is unreadable"}

    async with extension(broken) as url, httpx.AsyncClient(headers=auth()) as client:
        r = await client.get(f"{url}/forge/ui")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    said = "the engine answered /api/forge/models with HTTP 500: the store at /x is unreadable"
    assert said in r.text
    async with extension(None) as url, httpx.AsyncClient(headers=auth()) as client:
        r = await client.get(f"{url}/forge/ui")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "is unreachable" in r.text and "Traceback" not in r.text


async def test_the_proxy_answers_a_json_502_when_the_engine_is_down() -> None:
    async with extension(None) as url, httpx.AsyncClient(headers=auth()) as client:
        r = await client.get(f"{url}/forge/api/tags")
    assert r.status_code == 502 and "the engine is unreachable" in r.json()["error"]


def test_the_server_survives_a_crash_of_its_engine(server: Server) -> None:
    """The engine runs in a child process: an abort in a backend kills the child, the
    Jupyter server goes on, and the child is started again on the same port and key."""
    r = httpx.post(f"{server.url}/forge/api/generate", headers=auth(), json={"model": "crash:1"})
    assert r.status_code == 502  # the engine died under the request
    assert httpx.get(f"{server.url}/api/status", headers=auth()).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{server.url}/forge/api/tags", headers=auth(), timeout=5)
            if r.status_code == 200:
                break
        assert time.monotonic() < deadline, "the engine was not started again"
        time.sleep(0.2)
    body = {"model": "echo:1", "prompt": "a b", "stream": False}
    r = httpx.post(f"{server.url}/forge/api/generate", headers=auth(), json=body, timeout=30)
    assert r.status_code == 200 and r.json()["response"]


def _engine_child(jupyter: Any) -> Any:
    """The engine child of a Jupyter server (a psutil Process). Waits a little: one that
    crashed at start (a port taken between the probe and its bind, say) is restarted after
    a second."""
    deadline = time.monotonic() + 15
    while True:
        found = [p for p in jupyter.children() if "serve_for_parent" in " ".join(p.cmdline())]
        if len(found) == 1 or time.monotonic() > deadline:
            [engine] = found
            return engine
        time.sleep(0.2)


def test_the_engine_ends_with_a_killed_jupyter_server(tmp_path: Path) -> None:
    """SIGKILL gives Jupyter no chance to stop its engine: the child sees its parent gone
    and ends by itself, so no engine is left behind holding a port and memory."""
    import psutil

    home, root = tmp_path / "home", tmp_path / "root"
    root.mkdir()
    add_null_model(home, "echo:1", {})
    with jupyter_server(home, root, TOKEN) as url:
        port = int(url.rsplit(":", 1)[1])
        jupyter = next(
            psutil.Process(c.pid)
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port and c.pid
        )
        engine = _engine_child(jupyter)
        jupyter.kill()
        engine.wait(30)  # psutil.TimeoutExpired if it outlives its parent
        assert not engine.is_running()
