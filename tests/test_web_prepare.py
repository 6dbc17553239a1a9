"""One model name in the browser (slow tier, Chromium): a store holding only minilm:l6
(safetensors) embeds in the page with ``target: 'webgpu'`` and ``target: 'wasm'`` with no
``forge convert`` by hand. ``forge web`` makes the ONNX form WASM needs before it serves;
on a server that has not, the page runs the model as stored on WebGPU (the Pyodide Mold)
and asks the engine for the ONNX form (POST /web/prepare) only for WASM. A GET of
/web/models.json never converts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ferrousforge.store.store import Store

from .labharness import forge
from .vectors import cosine
from .webharness import SENTENCES, chromium, engine_server, fresh_home, need

pytestmark = pytest.mark.slow

TEXTS = SENTENCES[:3]  # SwiftShader is slow
EMBED = """
  const info = await forge.load('minilm:l6', {target: arg.target});
  const out = await forge.embed('minilm:l6', arg.texts);
  return {info, embeddings: out.embeddings, listed: (await forge.models()).map((m) => m.name)};
"""


def reference(url: str) -> list[list[float]]:
    body = {"model": "minilm:l6", "input": TEXTS}
    r = httpx.post(url + "/api/embed", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return list(r.json()["embeddings"])


def same(reference: list[list[float]], got: Any) -> None:
    cosines = [cosine(a, b) for a, b in zip(reference, got["embeddings"], strict=True)]
    assert min(cosines) >= 0.9999, cosines


def listed(url: str) -> list[str]:
    r = httpx.get(url + "/web/models.json", timeout=30)
    assert r.status_code == 200, r.text
    return [m["name"] for m in r.json()["models"]]


def test_forge_web_makes_the_wasm_form_before_it_serves(tmp_path: Path) -> None:
    need()
    home = fresh_home(tmp_path / "home", "minilm:l6")
    log = tmp_path / "forge-web.log"
    with forge(["web"], {"FORGE_HOME": str(home), "FORGE_THREADS": "2"}, log, timeout=300) as (
        _,
        url,
    ):
        assert "converting minilm:l6 to onnx for the browser on wasm" in log.read_text()
        assert listed(url) == ["minilm:l6", "minilm:l6-onnx"]
        expected = reference(url)
        with chromium(url, webgpu=True) as page:
            wasm = page.run(EMBED, {"target": "wasm", "texts": TEXTS})
            webgpu = page.run(EMBED, {"target": "webgpu", "texts": TEXTS})
            assert page.foreign() == [], page.foreign()
    for got, target in ((wasm, "wasm"), (webgpu, "webgpu")):
        info = got["info"]
        assert (info["runtime"], info["target"], info["model"]) == ("ort", target, "minilm:l6-onnx")
        same(expected, got)
    assert Store(home).get("minilm:l6-onnx").parent == "minilm:l6"


def test_a_page_runs_the_model_as_stored_and_asks_only_for_wasm(tmp_path: Path) -> None:
    need()
    home = fresh_home(tmp_path / "home", "minilm:l6")
    store = Store(home)
    with engine_server(home) as server, chromium(server.url, webgpu=True) as page:
        for _ in range(2):  # GET and HEAD, twice: nothing is converted for a listing
            assert listed(server.url) == ["minilm:l6"]
            httpx.head(server.url + "/web/models.json", timeout=30)
        assert store.derived("minilm:l6") == []
        expected = reference(server.url)
        webgpu = page.run(EMBED, {"target": "webgpu", "texts": TEXTS})
        assert store.derived("minilm:l6") == []  # WebGPU read the safetensors as stored
        wasm = page.run(EMBED, {"target": "wasm", "texts": TEXTS})
        assert page.foreign() == [], page.foreign()
        posts = [u for u in page.requests if u.endswith("/web/prepare")]
    info = webgpu["info"]
    assert (info["runtime"], info["target"], info["model"]) == ("pyodide", "webgpu", "minilm:l6")
    assert webgpu["listed"] == ["minilm:l6"]
    same(expected, webgpu)
    info = wasm["info"]
    assert (info["runtime"], info["target"], info["model"]) == ("ort", "wasm", "minilm:l6-onnx")
    assert wasm["listed"] == ["minilm:l6", "minilm:l6-onnx"]
    same(expected, wasm)
    assert posts == [server.url + "/web/prepare"]  # one request asked for the conversion
    assert [m.name for m in store.derived("minilm:l6")] == ["minilm:l6-onnx"]
