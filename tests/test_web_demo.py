"""The demo page (web/index.html, web/demo/) driven like a user in Chromium with WebGPU off:
auto falls back to WASM and the page says why, the similarity heatmap follows the typed
sentences and its vectors match the engine's, and smollm2:135m streams a chat answer through
wllama. Both tests share one page (the second picks another model in it), and no request may
leave the origin. The element hooks are listed at the top of web/demo/main.js."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferrousforge.api import webapp

from .webharness import Page, chromium, engine_server, need

pytestmark = pytest.mark.slow

SIMILAR = ["A cat sits on the mat.", "A kitten is sitting on the mat."]
OTHER = "The stock market fell sharply today."
LOAD_S = 180  # a 90-100 MB model from the store into the tab, on a busy 2-core machine


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


@pytest.fixture(scope="module")
def demo() -> Iterator[Page]:
    home = need("minilm:l6", "minilm:l6-onnx")
    with engine_server(home) as server, chromium(server.url, webgpu=False) as page:
        page.page.set_default_timeout(60_000)
        page.page.wait_for_selector(f"{tid('model-select')}:not([disabled])")
        yield page


def load(page: Page, model: str) -> None:
    """Pick ``model`` with target auto, press Load, wait for 100%."""
    p = page.page
    p.select_option(tid("model-select"), model)
    p.select_option(tid("target-select"), "auto")
    p.click(tid("load-button"))
    p.wait_for_selector(f'{tid("progress")}[data-status="ready"]', timeout=LOAD_S * 1000)
    assert p.get_attribute(tid("progress-bar"), "aria-valuenow") == "100"
    assert re.fullmatch(r"[\d.]+ MB / [\d.]+ MB · 100% · ready", p.inner_text(tid("progress-text")))
    assert p.get_attribute(tid("info-panel"), "data-loaded") == "true"
    assert p.is_hidden(tid("error")), p.inner_text(tid("error"))


def screenshot(page: Page, path: Path) -> None:
    page.page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 30_000, len(data)


def visible(page: Page, *names: str) -> None:
    hidden = [n for n in names if not page.page.is_visible(tid(n))]
    assert hidden == [], f"not visible: {hidden}"


def test_embeddings_fall_back_to_wasm_and_match_the_server(demo: Page, tmp_path: Path) -> None:
    p = demo.page
    load(demo, "minilm:l6")
    # the fallback: WebGPU off (no flag), so auto runs on WASM and says why
    why = p.inner_text(tid("why"))
    assert why.startswith("fell back to WASM") and "WebGPU" in why, why
    assert p.inner_text(tid("info-target")) == "WASM"
    assert "onnxruntime-web" in p.inner_text(tid("info-backend"))
    assert "cross-origin isolated" in p.inner_text(tid("info-isolation"))

    texts = [SIMILAR[0], OTHER, SIMILAR[1]]
    p.fill(tid("sentences-input"), "\n".join(texts))
    shows = "(t) => document.getElementById('heatmap').dataset.texts == JSON.stringify(t)"
    p.wait_for_function(shows, arg=texts)  # typed, debounced, embedded, drawn
    read = "cs => cs.map(c => [+c.dataset.row, +c.dataset.col, +c.dataset.value, c.textContent])"
    cells = p.eval_on_selector_all(tid("heatmap-cell"), read)
    cosine = {(r, c): v for r, c, v, _ in cells}
    assert len(cosine) == 9
    for i in range(3):
        assert cosine[i, i] == pytest.approx(1.0, abs=1e-4)
    assert {text for r, c, _, text in cells if r == c} == {"1.00"}
    assert cosine[0, 2] > cosine[0, 1] and cosine[0, 2] > cosine[1, 2], cosine
    assert cosine[0, 2] > 0.5 and cosine[0, 1] < 0.3, cosine
    assert "3 sentences" in p.inner_text(tid("embed-stats"))

    p.click(tid("embed-compare"))
    result = tid("embed-compare-result")
    p.wait_for_selector(f'{result}[data-stale="false"]')
    shown = p.eval_on_selector_all(tid("compare-cosine"), "cs => cs.map(c => +c.dataset.value)")
    assert len(shown) == 3 and min(shown) >= 0.9999, shown
    assert float(p.get_attribute(result, "data-min-cosine") or 0) >= 0.9999
    assert "min cosine" in p.inner_text(result)
    assert p.is_hidden(tid("error")), p.inner_text(tid("error"))

    screenshot(demo, tmp_path / "demo-embed.png")
    visible(demo, "model-select", "runtime-select", "target-select", "load-button", "progress")
    visible(demo, "info-panel", "why", "sentences-input", "heatmap", "embed-compare")
    visible(demo, "embed-compare-result")
    assert demo.foreign() == []


def test_chat_streams_an_answer_in_the_tab(demo: Page, tmp_path: Path) -> None:
    if not (webapp.root() / "runtimes" / "wllama.js").is_file():
        pytest.skip("web/runtimes/wllama.js (the wllama Mold) is not written yet")
    need("smollm2:135m")
    p = demo.page
    load(demo, "smollm2:135m")
    assert p.inner_text(tid("info-target")) == "WASM"
    assert "WASM" in p.inner_text(tid("why"))

    p.fill(tid("chat-max-tokens"), "24")  # the system prompt asks for one short sentence
    p.fill(tid("chat-input"), "What is the capital of France?")
    p.click(tid("chat-send"))
    p.wait_for_selector(f'{tid("chat-answer")}[data-state="done"]', timeout=LOAD_S * 1000)
    answer = p.inner_text(f"{tid('chat-answer')} .bubble")
    assert "Paris" in answer, answer
    assert float(p.get_attribute(tid("chat-tps"), "data-value") or 0) > 0
    assert re.fullmatch(r"[\d.]+ tok/s", p.inner_text(tid("chat-tps")))
    roles = p.eval_on_selector_all(tid("chat-message"), "ms => ms.map(m => m.dataset.role)")
    assert roles == ["user"]
    assert p.is_hidden(tid("error")), p.inner_text(tid("error"))

    screenshot(demo, tmp_path / "demo-chat.png")
    visible(demo, "model-select", "load-button", "progress", "info-panel", "why")
    visible(demo, "chat-input", "chat-send", "chat-answer", "chat-tps", "chat-compare")
    assert demo.foreign() == []
