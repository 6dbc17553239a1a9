"""The wllama Mold in Chromium (slow tier): smollm2:135m's GGUF runs through llama.cpp in WASM
with target auto, streams a chat answer token by token, runs 2 threads by wllama's own report
when the page is cross-origin isolated, reuses the KV cache of the first turn for the second,
and loads nothing from anywhere but the page's origin. One page for all of it: the model is
98 MB."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .webharness import chromium, engine_server, need

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
CHAT = """
  const info = await forge.load('smollm2:135m', {target: 'auto'});
  const pieces = [];
  const messages = [{role: 'user', content: arg.question}];
  const first = await forge.generate('smollm2:135m', messages,
    {onToken: (p) => pieces.push(p), temperature: 0, maxTokens: 32});
  messages.push({role: 'assistant', content: first.text}, {role: 'user', content: 'And of Italy?'});
  const second = await forge.generate('smollm2:135m', messages, {temperature: 0, maxTokens: 8});
  return {info, pieces, first, second, isolated: crossOriginIsolated};
"""


@pytest.fixture(scope="module")
def chat() -> Iterator[dict[str, Any]]:
    """Two turns of one conversation in one page, plus the requests that page made."""
    home = need("smollm2:135m")
    with engine_server(home) as server, chromium(server.url) as page:
        got = page.run(CHAT, {"question": QUESTION})
        got["foreign"] = page.foreign()
        body = {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": False,
            "options": {"num_predict": 1},
        }
        got["server"] = httpx.post(server.url + "/api/chat", json=body, timeout=120).json()
        yield got


def test_streams_a_greedy_answer(chat: dict[str, Any]) -> None:
    info, first, pieces = chat["info"], chat["first"], chat["pieces"]
    # auto: llama.cpp has no WebGPU path in the page, even with an adapter there
    assert (info["runtime"], info["target"], info["model"]) == ("wllama", "wasm", "smollm2:135m")
    assert info["backend"].startswith("wllama 3.13 (llama.cpp b")
    assert "Paris" in first["text"], first["text"]
    assert len(pieces) > 1 and "".join(pieces) == first["text"]
    assert first["tokens"] >= len(pieces) and first["tokensPerSecond"] > 0
    assert first["promptTokens"] > 20 and first["promptCached"] == 0  # the chat template's


def test_the_page_tokenizes_the_chat_as_the_server_does(chat: dict[str, Any]) -> None:
    # wllama has no tokenize call; both render the GGUF's chat template and count its tokens
    assert chat["first"]["promptTokens"] == chat["server"]["prompt_eval_count"]


def test_two_threads_when_cross_origin_isolated(chat: dict[str, Any]) -> None:
    # wllama's getNumThreads() says 1 unless it really started its pthreads (isMultithread())
    assert chat["isolated"] is True
    assert chat["info"]["threads"] == 2
    assert chat["info"]["device"].endswith("2 thread(s), multi-thread")


def test_second_turn_reuses_the_kv_cache(chat: dict[str, Any]) -> None:
    first, second = chat["first"], chat["second"]
    # llama-server's own counts: the first turn's prompt came from the cache, not evaluated again
    assert second["promptTokens"] > first["promptTokens"] + first["tokens"] // 2
    assert second["promptCached"] >= first["promptTokens"], second
    assert 0 < second["promptEvaluated"] < second["promptTokens"] - first["promptTokens"], second


def test_nothing_leaves_the_origin(chat: dict[str, Any]) -> None:
    assert chat["foreign"] == []
