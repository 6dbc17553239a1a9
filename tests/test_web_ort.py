"""The onnxruntime-web Mold in Chromium (slow tier): minilm:l6's ONNX export on the wasm and
webgpu providers gives the server's embeddings and token ids, WASM really runs 2 threads
when the page is cross-origin isolated (and 1 when it is not), ``auto`` says why it picked
WASM, and nothing the page loads comes from anywhere but its own origin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ferrousforge.store.store import Store

from .vectors import assert_matches, cosine
from .webharness import LONG, SENTENCES, Page, chromium, engine_server, need, server_ids

pytestmark = pytest.mark.slow

TEXTS = [*SENTENCES, LONG]
EMBED = """
  const info = await forge.load('minilm:l6', {target: arg.target});
  const out = await forge.embed('minilm:l6', arg.texts);
  return {info, ids: out.ids, embeddings: out.embeddings, isolated: crossOriginIsolated};
"""


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[list[int]], list[list[float]]]]:
    """The engine's URL, its token ids for TEXTS and its embeddings of them."""
    home = need("minilm:l6", "minilm:l6-onnx")
    ids = server_ids(Store(home).get("minilm:l6-onnx").file, TEXTS)
    with engine_server(home) as srv:
        body = {"model": "minilm:l6", "input": TEXTS}
        vectors = httpx.post(srv.url + "/api/embed", json=body, timeout=120).json()["embeddings"]
        yield srv.url, ids, vectors


def check(page: Page, target: str, ids: list[list[int]], reference: Any) -> dict[str, Any]:
    count = (
        len(TEXTS) if target == "wasm" else len(SENTENCES)
    )  # SwiftShader: 256 tokens take minutes
    got = page.run(EMBED, {"target": target, "texts": TEXTS[:count]})
    assert got["ids"] == ids[:count]
    assert_matches(reference[:count], got["embeddings"], 1e-4)
    info = got["info"]
    assert (info["runtime"], info["target"], info["model"]) == ("ort", target, "minilm:l6-onnx")
    assert info["backend"].startswith("onnxruntime-web")
    assert page.foreign() == [], page.foreign()
    return dict(got)


def test_wasm_matches_the_server_with_two_threads(server: Any) -> None:
    url, ids, reference = server
    with chromium(url, webgpu=False) as page:
        both = "forge.load('minilm:l6', {target: 'wasm'})"
        page.run(f"await Promise.all([{both}, {both}])")  # one load; the second waits for it
        assert sum(u.endswith("/model.onnx") for u in page.requests) == 1
        got = check(page, "wasm", ids, reference)
        assert len(got["ids"][-1]) == 256 and got["ids"][-1][-1] == 102  # cut, ends in [SEP]
        # the runtime's own report, after it set itself up: ORT drops to 1 thread unless the
        # page is cross-origin isolated, and then starts its pthread pool as workers
        assert got["isolated"] is True
        assert got["info"]["threads"] == 2
        assert len(page.page.workers) >= 1
        again = "await forge.unload('minilm:l6'); return await forge.load('minilm:l6', {})"
        auto = page.run(again)
    # with WebGPU off, auto keeps WASM and says why
    assert auto["target"] == "wasm", auto
    assert auto["why"].startswith("fell back to WASM: WebGPU has no adapter"), auto


def test_webgpu_matches_the_server(server: Any) -> None:
    url, ids, reference = server
    with chromium(url, webgpu=True) as page:
        got = check(page, "webgpu", ids, reference)
        targets = page.run("return await forge.targets()")
    assert targets["webgpu"] is True and targets["shaderF16"] is False  # SwiftShader
    assert "WebGPU" in got["info"]["device"]
    # the browser and server vectors are not just close but tell the texts apart alike
    e = got["embeddings"]
    assert cosine(e[0], e[1]) > 0.6 > cosine(e[0], e[2])


def test_without_isolation_headers_wasm_runs_one_thread(server: Any) -> None:
    """The control for the threads test: strip COOP/COEP and the runtime reports 1 thread."""
    url, _, reference = server
    with chromium(url, webgpu=False, path="/health") as page:

        def strip(route: Any) -> None:
            response = route.fetch()
            kept = {k: v for k, v in response.headers.items() if not k.startswith("cross-origin-")}
            route.fulfill(response=response, headers=kept)

        page.page.route(url + "/web/", strip)  # isolation is the document's headers
        page.page.goto(url + "/web/")
        got = page.run(EMBED, {"target": "wasm", "texts": TEXTS[:2]})
    assert got["isolated"] is False
    assert got["info"]["threads"] == 1
    assert_matches(reference[:2], got["embeddings"], 1e-4)


def test_auto_uses_wasm_over_a_software_webgpu_adapter(server: Any) -> None:
    url, _, _ = server
    with chromium(url, webgpu=True) as page:
        info = page.run("return await forge.load('minilm:l6', {target: 'auto'})")
    assert info["target"] == "wasm"
    assert "software renderer" in info["why"] and "swiftshader" in info["why"]
