"""The browser build under test: the engine's HTTP server (which serves ``/web/``) on the
real-model test home, and Debian Chromium driven by Playwright with a listener that records
every request the page makes, so a test can assert that none left the origin."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ferrousforge.api import webapp
from ferrousforge.api.server import ServerThread
from ferrousforge.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
# Quiet Chromium on a machine with no network (DESIGN.md §6 and the machine notes).
QUIET = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WEBGPU = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]
# Sentences the browser encoders must embed and tokenize as the server does.
SENTENCES = [
    "a cat sits on the mat",
    "a kitten is sitting on a rug",
    "the stock market fell sharply today",
    "Crème brûlée, 東京 and emoji 🚀 tokenise too",
]
LONG = "long " * 300  # past max_length (256): cut, keeping the final [SEP]


def server_ids(folder: Path, texts: list[str]) -> list[list[int]]:
    """The token ids the server's encoders feed the model for ``texts`` (padding dropped)."""
    from ferrousforge.backends.encoders import TextTokenizer

    batch = TextTokenizer(folder).encode(texts)
    return [
        [int(i) for i, m in zip(row, mask, strict=True) if m]
        for row, mask in zip(batch.input_ids, batch.attention_mask, strict=True)
    ]


def test_home() -> Path:
    return Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home")).expanduser()


def need(*models: str) -> Path:
    """The test home, or a skip naming what is missing (models, runtimes, Chromium)."""
    home = test_home()
    for name in models:
        family, _, tag = name.partition(":")
        if not (home / "manifests/library" / family / f"{tag}.json").is_file():
            pytest.skip(f"{name} is not in {home}; ./dev.sh test pulls and converts it first")
    if not webapp.built():
        pytest.skip("web/vendor is not built: npm ci && npm run build")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    return home


def fresh_home(dst: Path, *models: str) -> Path:
    """A new store at ``dst`` holding only ``models`` of the test home, as if just pulled
    there (its blobs hardlinked, never changed), or a skip when the test home lacks one."""
    from ferrousforge.store.store import Store

    home = test_home()
    for name in models:
        family, _, tag = name.partition(":")
        if not (home / "manifests/library" / family / f"{tag}.json").is_file():
            pytest.skip(f"{name} is not in {home}; ./dev.sh test pulls it first")
        manifest = Store(home).get(name)
        blob = dst / "blobs" / manifest.file.name
        if manifest.file.is_dir():
            shutil.copytree(manifest.file, blob, copy_function=os.link)
        else:
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.link(manifest.file, blob)
        Store(dst).save(manifest.model_copy(update={"path": str(blob)}))
    return dst


@contextlib.contextmanager
def engine_server(home: Path) -> Iterator[ServerThread]:
    server = ServerThread(Settings(home=home, threads=2))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Page:
    """A Playwright page plus every request URL it made and what it logged."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Requests that went anywhere but the page's origin (data:/blob: are in-page)."""
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob")
            and f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" != self.origin
        ]

    def run(self, script: str, arg: Any = None, timeout: float = 300) -> Any:
        """Evaluate an async function body with ``forge`` (web/forge.js) and ``arg`` in scope."""
        self.page.set_default_timeout(timeout * 1000)
        return self.page.evaluate(
            "async ([script, arg]) => {"
            " const forge = await import('/web/forge.js');"
            " return await (new Function('forge', 'arg',"
            " `return (async () => { ${script} })()`))(forge, arg); }",
            [script, arg],
        )


@contextlib.contextmanager
def chromium(url: str, webgpu: bool = True, path: str = "/web/") -> Iterator[Page]:
    """Chromium on ``url + path``; WebGPU (SwiftShader) only when ``webgpu``."""
    from playwright.sync_api import sync_playwright

    args = QUIET + (WEBGPU if webgpu else []) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            tab = context.new_page()
            page = Page(tab, url)
            tab.on("request", lambda r: page.requests.append(r.url))
            tab.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
            tab.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
            tab.goto(url + path)
            yield page
        finally:
            browser.close()
