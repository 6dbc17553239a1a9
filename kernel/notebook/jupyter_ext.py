"""The Jupyter server extension: one engine per Jupyter server, shared by all its kernels.

On load it starts the engine's HTTP API in a child process it supervises (restarted after a
crash), on a private 127.0.0.1 port with a random key, mounts
it under ``<base_url>forge/`` behind Jupyter's own authentication (a request without a
token gets 403, and a cookie-authenticated POST needs Jupyter's XSRF token, as every Jupyter
API does), serves a small page at ``forge/ui``, and exports ``FORGE_URL`` and
``FORGE_API_KEY`` so the kernels this server starts use that engine without configuration
(``notebook.shared()``): several notebooks, one copy of each model. Over HTTP, the engine
pulls local files only from Jupyter's root folder (``pull_paths``).

Installs enable it (``etc/jupyter/jupyter_server_config.d/ferrousforge.json``); editable
installs skip that data file, so it is copied there by hand (``./dev.sh setup`` does).
"""

from __future__ import annotations

import html
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..config import load_settings
from ..errors import ConfigError
from .hub import hub_service

log = logging.getLogger(__name__)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server"}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "ferrousforge.notebook.jupyter_ext"}]


class Backend:
    """The engine's API on a private 127.0.0.1 port with a random key, in a child process
    this server supervises: a native crash in a backend (an abort in llama.cpp, say) takes
    down the child, never the Jupyter server, and the child is started again on the same
    port with the same key (passed in its environment, not on its command line). HTTP pulls
    of local files may reach ``root`` (Jupyter's root folder) and the folders the settings
    already allow."""

    restart_delay = 1.0  # seconds between a crash and the restart: no tight crash loop

    def __init__(self, root: Path, ready_within: float = 60) -> None:
        from ..api.server import bind

        self.key = secrets.token_urlsafe(24)
        settings = load_settings()
        with bind("127.0.0.1", 0) as probe:  # a free port, kept across restarts
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        self._env |= {
            "FORGE_HOST": "127.0.0.1",
            "FORGE_PORT": str(port),
            "FORGE_API_KEYS": json.dumps([self.key]),
            "FORGE_PULL_PATHS": json.dumps([str(root), *map(str, settings.pull_paths)]),
        }
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _proc against stop() during a restart
        self._proc = self._start()
        self._wait_ready(ready_within)
        self._watch = threading.Thread(target=self._supervise, name="forge-engine", daemon=True)
        self._watch.start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD], env=self._env, stdin=subprocess.DEVNULL
        )

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(f"the engine exited at start (status {self._proc.returncode})")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ConfigError(f"the engine did not answer within {seconds:.0f} s")

    def _supervise(self) -> None:
        while True:
            code = self._proc.wait()
            if self._stopping.wait(self.restart_delay):
                return
            log.error("the engine exited (status %s): starting it again on %s", code, self.url)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = self._start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The child: the engine's server alone, with the settings its environment gives; it ends
# when this server does, even one killed outright.
_CHILD = (
    "from ferrousforge.api.server import serve_for_parent\n"
    "from ferrousforge.config import load_settings\n"
    "serve_for_parent(load_settings())\n"
)


class ProxyHandler(APIHandler):
    """``forge/<path>`` → the engine's ``/<path>``. NDJSON and SSE pass through chunk by
    chunk, and a client that leaves closes the upstream request."""

    def initialize(self, backend: Backend | HubBackend) -> None:
        self.backend = backend

    @web.authenticated
    async def get(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def post(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def delete(self, path: str) -> None:
        await self._forward(path)

    async def _forward(self, path: str) -> None:
        headers = {"Authorization": f"Bearer {self.backend.key}"}
        for name in _FORWARDED:  # the body's type, and the Open Inference Protocol's split
            if name in self.request.headers:
                headers[name] = self.request.headers[name]
        query = _without_token(self.request.query)
        target = "/" + path + (f"?{query}" if query else "")
        try:
            await self._relay(target, headers)
        except httpx.TransportError as e:  # before any byte went out: a JSON 502
            if self._headers_written:
                raise
            self.set_status(502)
            self.finish({"error": f"the engine is unreachable: {e or type(e).__name__}"})

    async def _relay(self, target: str, headers: dict[str, str]) -> None:
        async with (
            httpx.AsyncClient(base_url=self.backend.url, timeout=None) as client,
            client.stream(
                self.request.method or "GET",
                target,
                content=self.request.body or None,
                headers=headers,
            ) as upstream,
        ):
            self.set_status(upstream.status_code)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    self.set_header(name, value)
            try:
                async for chunk in upstream.aiter_raw():
                    self.write(chunk)
                    await self.flush()
            except StreamClosedError:
                return  # leaving the block closes upstream: the engine stops generating
        self.finish()


_FORWARDED = ("Content-Type", "Inference-Header-Content-Length")


class UiHandler(JupyterHandler):
    """``forge/ui``: the models in the store, what is loaded, and the devices."""

    def initialize(self, backend: Backend | HubBackend) -> None:
        self.backend = backend

    @web.authenticated
    async def get(self) -> None:
        headers = {"Authorization": f"Bearer {self.backend.key}"}
        self.set_header("Content-Type", "text/html; charset=utf-8")
        try:
            async with httpx.AsyncClient(
                base_url=self.backend.url, headers=headers, timeout=120
            ) as c:
                models = await _engine_json(c, "/api/forge/models")
                loaded = {m["name"]: m for m in await _engine_json(c, "/api/forge/loaded")}
                devices = await _engine_json(c, "/api/forge/devices")
        except _EngineError as e:
            self.set_status(502)
            self.finish(_shell(f'<p id="error">{html.escape(str(e))}</p>'))
            return
        self.finish(_page(models, loaded, devices))


class _EngineError(Exception):
    """The engine answered an error, or did not answer (one line, for the page)."""


async def _engine_json(client: httpx.AsyncClient, path: str) -> Any:
    try:
        r = await client.get(path)
    except httpx.TransportError as e:
        where = str(client.base_url).rstrip("/")
        raise _EngineError(
            f"the engine at {where} is unreachable: {e or type(e).__name__}"
        ) from None
    if r.is_error:
        try:
            reason = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = r.text.strip()[:200] or r.reason_phrase
        raise _EngineError(f"the engine answered {path} with HTTP {r.status_code}: {reason}")
    return r.json()


def _without_token(query: str) -> str:
    """``query`` less Jupyter's ``token`` parameter (the engine's logs never see it), every
    other parameter as sent."""
    return "&".join(p for p in query.split("&") if unquote_plus(p.partition("=")[0]) != "token")


def _page(models: list[dict[str, Any]], loaded: dict[str, Any], devices: list[Any]) -> str:
    def rows(items: list[list[str]]) -> str:
        return "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in items
        )

    model_rows = [
        [
            m["name"],
            m["format"],
            f"{m['size'] / 1e6:.1f} MB",
            (f"{loaded[m['name']]['backend']} on {loaded[m['name']]['device']}")
            if m["name"] in loaded
            else "",
        ]
        for m in models
    ]
    device_rows = [[d["id"], d["name"], ", ".join(d["backends"])] for d in devices]
    return _shell(f"""
<h2>Models</h2><table id="models"><tr><th>Name</th><th>Format</th><th>Size</th><th>Loaded</th></tr>
{rows(model_rows)}</table>
<h2>Devices</h2><table id="devices"><tr><th>Device</th><th>Name</th><th>Backends</th></tr>
{rows(device_rows)}</table>""")


def _shell(body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>FerrousForge</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin-bottom:2em}}th{{background:#f4f4f4}}
td,th{{border-bottom:1px solid #ddd;padding:.35em .8em;text-align:left}}
#error{{color:#a00}}</style>
</head><body><h1>FerrousForge</h1>{body}</body></html>"""


class HubBackend:
    """The hub's shared forge service, reached with this user's hub token: on a hub the
    extension starts no engine of its own."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url.rstrip("/"), key

    def stop(self) -> None:
        pass


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if "ferrousforge_backend" in serverapp.web_app.settings:
        # enabled under both its names (an old config's ferrousforge.jupyter_ext and the
        # installed one): one engine, not two
        return
    found = hub_service()
    backend = HubBackend(*found) if found else Backend(Path(serverapp.root_dir))
    serverapp.web_app.settings["ferrousforge_backend"] = backend
    os.environ["FORGE_URL"] = backend.url  # inherited by every kernel started from now on
    os.environ["FORGE_API_KEY"] = backend.key
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "forge/ui"), UiHandler, {"backend": backend}),
            (url_path_join(base, "forge/(.*)"), ProxyHandler, {"backend": backend}),
        ],
    )
    serverapp.log.info("FerrousForge engine at %sforge/ (kernels use it)", base)


def _unload_jupyter_server_extension(serverapp: Any) -> None:
    backend = serverapp.web_app.settings.pop("ferrousforge_backend", None)
    if backend is not None:
        backend.stop()
