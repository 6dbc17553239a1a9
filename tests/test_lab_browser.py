"""``BrowserMold`` in a real JupyterLab (server extension on), driven by Playwright on
Debian's Chromium: the widget imports ``<base_url>forge/web/forge.js`` into the notebook's
own tab, embeds there on WASM, and the answer comes back to Python, where a later cell
compares it with the server's own embeddings. Every request the tab makes stays on its
origin. The tab's own calls to the engine (``forge.server``) go through the proxy too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from ferrousforge.store.store import Store

from .labharness import WAIT_MS, Lab, Notebook, running_lab, write_notebook
from .webharness import CHROMIUM, QUIET, need

pytestmark = pytest.mark.slow
MODELS = ("minilm:l6", "minilm:l6-onnx")

FIRST = """\
from ferrousforge.widgets import BrowserMold

texts = ["a cat sits", "a kitten is sitting", "stock market"]
w = BrowserMold("minilm:l6", target="wasm")
fut = w.embed(texts)
bad = BrowserMold("minilm:l6", web_url="/nothing/here/")
bad_fut = bad.embed(texts)
display(w, bad)"""

LATER = """\
from ferrousforge import notebook

r = fut.result()
server = notebook.shared().embed("minilm:l6", texts).embeddings
norm = lambda v: sum(x * x for x in v) ** 0.5
cos = [sum(a * b for a, b in zip(x, y)) / (norm(x) * norm(y)) for x, y in zip(r.embeddings, server)]
print("cosines", " ".join(f"{c:.6f}" for c in cos))
print("shape", len(r.embeddings), len(r.embeddings[0]), len(r.ids))
print("backend", r.backend, "|", r.target, "|", r.model)
print("kept", w.last is r, w.status, w.info["target"], w.pending())
print("bad", type(bad_fut.exception()).__name__, "|", bad_fut.exception())"""


@dataclass
class Recorder:
    """Opens the harness's pages in contexts that record every request and console line."""

    browser: Any
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def new_page(self, **options: Any) -> Any:
        context = self.browser.new_context(**options)
        context.on("request", lambda r: self.requests.append(r.url))
        page = context.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return page


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    pytest.importorskip("anywidget")
    source = Store(need(*MODELS))
    root = tmp_path_factory.mktemp("lab-browser")
    store = Store(root / "home")
    for name in MODELS:
        store.save(source.get(name))  # the same blobs, by their absolute paths
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "browser.ipynb", FIRST, LATER)
    with running_lab(root, store.home, notebooks, root / "unused.gguf") as lab:
        yield lab


@pytest.fixture
def recorder(lab: Lab) -> Iterator[Recorder]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = QUIET + (["--no-sandbox"] if os.geteuid() == 0 else [])
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield Recorder(browser)
        finally:
            browser.close()


def test_browser_mold_embeds_in_the_tab_and_answers_python(lab: Lab, recorder: Recorder) -> None:
    nb = Notebook(recorder, lab, "browser.ipynb")
    page = nb.page
    try:
        nb.run(0)
        good, bad = page.locator(".ff-browser").nth(0), page.locator(".ff-browser").nth(1)
        page.locator(".ff-browser[data-state=done]").wait_for()
        assert "onnxruntime-web" in (good.get_attribute("data-backend") or "")
        assert good.get_attribute("data-target") == "wasm"
        assert good.locator("[data-field=why]").inner_text() == "wasm was asked for"
        assert re.fullmatch(
            r"3 × 384 embeddings in [\d.]+ ms", good.locator(".ff-browser-summary").inner_text()
        )
        assert good.locator(".ff-browser-matrix td").count() == 9
        page.locator(".ff-browser[data-state=error]").wait_for()
        assert (
            bad.locator(".ff-browser-error").inner_text().startswith("cannot import forge.js from ")
        )

        m = nb.output(
            1,
            r"cosines (.*)\nshape (.*)\nbackend (.*)\nkept (.*)\nbad (.*)",
        )
    except BaseException:
        widgets = page.evaluate(
            """() => [...document.querySelectorAll(".ff-browser")].map((e) => e.outerHTML)"""
        )
        sys.stdout.write(f"widgets: {widgets}\nconsole: {recorder.console}\n")
        raise
    finally:
        nb.close()
    cosines = [float(c) for c in m.group(1).split()]
    assert len(cosines) == 3 and min(cosines) >= 0.9999, cosines
    assert m.group(2) == "3 384 3"
    backend, target, model = m.group(3).split(" | ")
    assert backend.startswith("onnxruntime-web ") and backend.endswith("(wasm)")
    assert (target, model) == ("wasm", "minilm:l6-onnx")
    assert m.group(4) == "True ready wasm 0"
    kind, message = m.group(5).split(" | ")
    assert kind == "BrowserError"
    assert message == (
        f"cannot import forge.js from {lab.url}/nothing/here/forge.js (HTTP 404): "
        "web_url should be a FerrousForge /web/ URL"
    )

    fetched = {urlsplit(u).path for u in recorder.requests}
    for path in (
        "/forge/web/forge.js",
        "/forge/web/runtimes/ort.js",
        "/forge/web/models.json",
        "/forge/web/models/minilm/l6-onnx/model.onnx",
        "/forge/web/models/minilm/l6-onnx/tokenizer.json",
    ):
        assert path in fetched, path
    assert any(p.startswith("/forge/web/vendor/ort/") and p.endswith(".wasm") for p in fetched)
    foreign = [
        u
        for u in recorder.requests
        if urlsplit(u).scheme not in ("data", "blob")
        and f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" != lab.url
    ]
    assert foreign == []


def test_the_tab_posts_to_the_engine_through_the_proxy(lab: Lab, recorder: Recorder) -> None:
    """``forge.server.embed`` from a logged-in tab: a POST that only Jupyter's cookie
    authenticates, so Jupyter takes it only with its XSRF token (forge.js sends it)."""
    page = recorder.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{lab.url}/lab?token={lab.token}", wait_until="domcontentloaded")  # the cookies
    texts = ["a cat sits", "a kitten is sitting", "stock market"]
    vectors = page.evaluate(
        """async (texts) => {
            const forge = await import("/forge/web/forge.js");
            return (await forge.server.embed("minilm:l6", texts)).embeddings;
        }""",
        texts,
    )
    assert [len(v) for v in vectors] == [384, 384, 384]
    cat, kitten, stocks = vectors
    assert dot(cat, kitten) > dot(cat, stocks) + 0.2  # unit vectors: cosines
    assert f"{lab.url}/forge/api/embed" in recorder.requests


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
