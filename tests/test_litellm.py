"""LiteLLM, the library jupyter-ai 3 talks to models through, against a real ``forge serve``
over smollm2:135m and minilm:l6: its ``ollama_chat/``, ``ollama/`` and ``openai/`` providers,
whole and streamed (sync and async), usage, stop sequences, errors and embeddings.

LiteLLM fetches a remote cost map when it is imported unless LITELLM_LOCAL_MODEL_COST_MAP is
set, so it is set here before the first import; the ``offline`` fixture imports LiteLLM and
records every name lookup and connection away from 127.0.0.1, so a call that LiteLLM would
swallow (a fallback, a telemetry ping) still fails the test.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferrousforge as ff

from .apiserver import Running, running

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # read once, when litellm is imported

pytestmark = [
    pytest.mark.slow,
    # LiteLLM's own code against this pydantic, not the server: TypedDict fields it marks
    # ReadOnly, and model_fields read on an instance (deprecated since pydantic 2.11)
    pytest.mark.filterwarnings(
        "ignore:Item.* using the `ReadOnly` qualifier:UserWarning",
        "ignore:Accessing the 'model_.* on the instance:DeprecationWarning",
    ),
]
CHAT, EMBEDDER = "smollm2:135m", "minilm:l6"
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
# (LiteLLM's provider/model, the path under the server's URL it is given as api_base)
ROUTES = [("ollama_chat", ""), ("ollama", ""), ("openai", "/v1")]


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    for name in (CHAT, EMBEDDER):
        if not (home / "manifests/library" / f"{name.replace(':', '/')}.json").is_file():
            pytest.skip(f"{name} is not in {home}; ./dev.sh test pulls it first")
    with running(ff.Settings(home=home, num_ctx=2048, threads=2)) as srv:
        yield srv


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """LiteLLM (imported here, the first time under this guard), with every name lookup and
    connection beyond loopback recorded; any at all fails the test at teardown.

    A sync call runs LiteLLM's service hooks on the thread's current event loop, which
    ``asyncio.get_event_loop()`` makes when there is none and nobody closes (its socket pair
    is a ResourceWarning later, in some other test): the test's own loop is closed here."""
    reached: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            reached.append(f"connect {address[0]}")
        connect(self, address)  # the loopback guard of conftest.py refuses it as well

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if host is not None and not _loopback(name):
            reached.append(f"lookup {name}")
            raise socket.gaierror(socket.EAI_NONAME, "tests resolve no names")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    litellm = importlib.import_module("litellm")
    monkeypatch.setattr(litellm, "suppress_debug_info", True)  # no "Give Feedback" banner
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield litellm
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert not reached, f"litellm reached beyond loopback: {reached}"


def metrics(server: Running) -> dict[str, float]:
    """The server's own token counters (prompt tokens evaluated and reused, tokens made)."""
    wanted = {
        "forge_generated_tokens_total": "generated",
        f'forge_prompt_tokens_total{{model="{CHAT}"}}': "evaluated",
        f'forge_prompt_cache_tokens_total{{model="{CHAT}"}}': "cached",
    }
    found = {v: 0.0 for v in wanted.values()}
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        key, _, value = line.rpartition(" ")
        if key in wanted:
            found[wanted[key]] = float(value)
    return found


class Counted:
    """The server's token counts that one request added (after its inference ended)."""

    def __init__(self, server: Running) -> None:
        self.server, self.before = server, metrics(server)

    def delta(self) -> dict[str, int]:
        for _ in range(100):  # a stream's last event can overtake the inference's end hook
            now = metrics(self.server)
            if now["evaluated"] > self.before["evaluated"]:
                break
            time.sleep(0.02)
        return {k: int(now[k] - self.before[k]) for k in now}


def expected_usage(route: str, counted: dict[str, int]) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) as each API reports them: Ollama's
    ``prompt_eval_count`` counts only the tokens it evaluated, OpenAI's ``prompt_tokens``
    the cached ones too (README: prompt cache)."""
    prompt = counted["evaluated"] + (counted["cached"] if route == "openai" else 0)
    return prompt, counted["generated"]


def kwargs(server: Running, route: str, path: str, **more: Any) -> dict[str, Any]:
    return {
        "model": f"{route}/{CHAT}",
        "api_base": server.url + path,
        "api_key": "unused",
        "temperature": 0,
        "max_tokens": 30,
        **more,
    }


@pytest.mark.parametrize(("route", "path"), ROUTES)
def test_completion_whole_and_streamed(
    offline: Any, server: Running, route: str, path: str
) -> None:
    counted = Counted(server)
    whole = offline.completion(messages=PARIS, **kwargs(server, route, path))
    text = whole.choices[0].message.content
    assert "Paris" in text and whole.choices[0].finish_reason == "stop"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == expected_usage(
        route, counted.delta()
    )
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    counted = Counted(server)
    stream = offline.completion(
        messages=PARIS,
        stream=True,
        stream_options={"include_usage": True},
        **kwargs(server, route, path),
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 3 and "".join(deltas) == text  # token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    prompt, generated = expected_usage(route, counted.delta())
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, generated)
    assert generated == whole.usage.completion_tokens


@pytest.mark.parametrize(("route", "path"), ROUTES)
async def test_async_stream_as_jupyter_ai_reads_it(
    offline: Any, server: Running, route: str, path: str
) -> None:
    whole = await offline.acompletion(messages=PARIS, **kwargs(server, route, path))
    stream = await offline.acompletion(messages=PARIS, stream=True, **kwargs(server, route, path))
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text and text == whole.choices[0].message.content


@pytest.mark.parametrize(("route", "path"), ROUTES)
def test_stop_sequences_are_honoured(offline: Any, server: Running, route: str, path: str) -> None:
    args = kwargs(server, route, path, max_tokens=60, stop=["5"])
    whole = offline.completion(messages=COUNT, **args)
    text = whole.choices[0].message.content
    assert text.rstrip(", ").endswith("4") and "5" not in text  # "1, 2, 3, 4, "
    assert whole.choices[0].finish_reason == "stop"
    chunks = list(offline.completion(messages=COUNT, stream=True, **args))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    unstopped = offline.completion(messages=COUNT, **(args | {"stop": None}))
    assert unstopped.choices[0].message.content.startswith(text + "5")


@pytest.mark.parametrize(("route", "path"), ROUTES)
def test_an_unknown_model_is_litellms_not_found(
    offline: Any, server: Running, route: str, path: str
) -> None:
    args = kwargs(server, route, path) | {"model": f"{route}/no-such:model", "num_retries": 0}
    for stream in (False, True):
        with pytest.raises(offline.NotFoundError) as e:
            offline.completion(messages=PARIS, stream=stream, **args)
        assert "model 'no-such:model' not found" in str(e.value)
        assert e.value.status_code == 404


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize(("route", "path"), [("ollama", ""), ("openai", "/v1")])
def test_embeddings(offline: Any, server: Running, route: str, path: str) -> None:
    texts = ["a cat sits", "a kitten is sitting", "stock market"]
    r = offline.embedding(
        model=f"{route}/{EMBEDDER}", api_base=server.url + path, api_key="unused", input=texts
    )
    vectors = [d["embedding"] for d in r.data]
    assert [d["index"] for d in r.data] == [0, 1, 2] and len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > 0.7 > 0.2 > cosine(vectors[0], vectors[2])
    own = httpx.post(server.url + "/api/embed", json={"model": EMBEDDER, "input": texts}).json()
    for mine, theirs in zip(vectors, own["embeddings"], strict=True):
        assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) < 1e-5
    assert r.usage.prompt_tokens == own["prompt_eval_count"]
