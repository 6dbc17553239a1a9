"""The Pyodide + WGSL Mold in Chromium (slow tier): Python inside Pyodide runs minilm:l6 on
WebGPU (SwiftShader) with the server wgpu backend's WGSL kernels and gives the server's
token ids and embeddings, loading Pyodide, micropip, its wheel and the model from the page's
own origin alone. SwiftShader is slow, so the texts are short; the cut at 256 tokens is
checked through tokenize, which needs no GPU."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ferrousforge.store.store import Store

from .vectors import cosine
from .webharness import LONG, SENTENCES, chromium, engine_server, need, server_ids

pytestmark = pytest.mark.slow

SCRIPT = """
  let error = null;
  try {
    await forge.load('minilm:l6', {runtime: 'pyodide', target: 'wasm'});
  } catch (e) { error = e.message; }
  const started = performance.now();
  const info = await forge.load('minilm:l6', {runtime: 'pyodide', target: 'webgpu'});
  const loadMs = performance.now() - started;
  const out = await forge.embed('minilm:l6', arg.texts);
  const long = await forge.tokenize('minilm:l6', [arg.long]);
  await forge.unload('minilm:l6');  // destroys its WebGPU device
  const left = forge.loadedModels().length;
  return {error, info, loadMs, ids: out.ids, embeddings: out.embeddings, ms: out.ms, long, left};
"""


def test_pyodide_webgpu_matches_the_server() -> None:
    home = need("minilm:l6")
    folder = Store(home).get("minilm:l6").file
    with engine_server(home) as server, chromium(server.url) as page:
        got: dict[str, Any] = page.run(SCRIPT, {"texts": SENTENCES, "long": LONG})
        body = {"model": "minilm:l6", "input": SENTENCES}
        reference = httpx.post(server.url + "/api/embed", json=body, timeout=120).json()
        assert page.foreign() == [], page.foreign()  # Pyodide, micropip, wheel: all local
    assert got["error"] == "the Pyodide Mold runs on WebGPU only, not wasm"
    assert got["left"] == 0
    info = got["info"]
    assert (info["runtime"], info["target"], info["model"]) == ("pyodide", "webgpu", "minilm:l6")
    assert info["backend"].startswith("Pyodide ") and "WGSL" in info["backend"]
    assert info["device"].startswith("WebGPU: ") and "swiftshader" in info["device"]
    assert got["ids"] == server_ids(folder, SENTENCES)
    (long,) = got["long"]
    assert long == server_ids(folder, [LONG])[0] and len(long) == 256 and long[-1] == 102
    similarities = [
        cosine(a, b) for a, b in zip(reference["embeddings"], got["embeddings"], strict=True)
    ]
    assert min(similarities) >= 0.9999, similarities
    e = got["embeddings"]
    assert cosine(e[0], e[1]) > 0.6 > cosine(e[0], e[2])
