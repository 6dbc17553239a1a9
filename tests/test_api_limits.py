"""Auth, limits, timeouts, disconnects and metrics, each against its own real server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import ferrousforge as ff
from ferrousforge.api.auth import KeyStore

from .apiserver import running
from .nullmodels import add_null_model

SLOW = {"reply": "tok " * 2000, "token_delay": 0.02}


def settings(home: Path, **kw: Any) -> ff.Settings:
    add_null_model(home, "echo:1", {})
    add_null_model(home, "slow:1", SLOW)
    return ff.Settings(home=home, **kw)


def gen(url: str, model: str = "echo:1", **kw: Any) -> httpx.Response:
    body = {"model": model, "prompt": "a b", "stream": False} | kw.pop("body", {})
    return httpx.post(url + "/api/generate", json=body, timeout=30, **kw)


def metric(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    text = httpx.get(url + "/metrics", headers=headers).text
    lines = [
        ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{")
    ]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_api_keys_plain_hashed_and_from_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# team keys\n{KeyStore.hash('from-file')}\n")
    s = settings(
        tmp_path, api_keys=["plain-key", KeyStore.hash("hashed-key")], api_keys_file=keyfile
    )
    with running(s) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200  # no key needed
        r = gen(srv.url)
        assert r.status_code == 401 and "missing API key" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert gen(srv.url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        for key in ("plain-key", "hashed-key", "from-file"):
            r = gen(srv.url, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json()["response"] == "a b "
        for path in ("/api/tags", "/v1/models", "/metrics"):
            assert httpx.get(srv.url + path).status_code == 401
        assert httpx.get(srv.url + "/ready").json() == {"status": "ready", "loaded": 1}  # probes
        r = httpx.post(srv.url + "/v1/chat/completions", json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == 401


def test_jwt_bearer_tokens(tmp_path: Path) -> None:
    secret = "s" * 40
    s = settings(
        tmp_path,
        jwt_secret=secret,
        jwt_issuer="hub",
        jwt_audience="forge",
    )
    good = {"sub": "ada", "iss": "hub", "aud": "forge", "exp": int(time.time()) + 60}
    with running(s) as srv:
        token = jwt.encode(good, secret, algorithm="HS256")
        assert gen(srv.url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        bad = jwt.encode(good | {"aud": "other"}, secret, algorithm="HS256")
        r = gen(srv.url, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and "audience" in r.json()["error"]


def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    with running(settings(tmp_path, api_keys=["k1", "k2"], rate_limit_rpm=2)) as srv:
        one = {"Authorization": "Bearer k1"}
        assert [gen(srv.url, headers=one).status_code for _ in range(2)] == [200, 200]
        r = gen(srv.url, headers=one)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["error"]
        assert gen(srv.url, headers={"Authorization": "Bearer k2"}).status_code == 200
    with running(settings(tmp_path, rate_limit_tpm=5)) as srv:
        assert gen(srv.url, body={"prompt": "a b c d e f"}).status_code == 200  # 12 tokens
        r = gen(srv.url)
        assert r.status_code == 429 and "token" in r.json()["error"]


def test_body_limit_413(tmp_path: Path) -> None:
    with running(settings(tmp_path, max_body_bytes=1000)) as srv:
        assert gen(srv.url, body={"prompt": "x " * 1000}).status_code == 413

        def chunked() -> Any:  # no Content-Length: the limit counts the bytes as they come
            yield b'{"model": "echo:1", "prompt": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        r = httpx.post(srv.url + "/api/generate", content=chunked())
        assert r.status_code == 413 and "over 1000 bytes" in r.json()["error"]
        assert r.json()["type"] == "PayloadTooLarge"
        big = {"model": "echo:1", "messages": [{"role": "user", "content": "x " * 1000}]}
        openai = httpx.post(srv.url + "/v1/chat/completions", json=big)  # OpenAI's shape
        assert openai.status_code == 413
        assert "is over the limit of 1000" in openai.json()["error"]["message"]
        streamed = httpx.post(srv.url + "/v1/chat/completions", content=chunked())
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == 413


def test_full_queue_answers_503(tmp_path: Path) -> None:
    with running(settings(tmp_path, max_queue=1, num_parallel=1)) as srv:
        with httpx.stream(
            "POST", srv.url + "/api/generate", json={"model": "slow:1", "prompt": ""}
        ) as holder:
            pass  # load it first (an empty prompt preloads)
        with httpx.stream(
            "POST", srv.url + "/api/generate", json={"model": "slow:1", "prompt": "x"}
        ) as holder:
            lines = holder.iter_lines()  # keep it: a dropped iterator closes the stream
            next(lines)  # it holds the only slot
            waiter = threading.Thread(
                target=gen,
                args=(srv.url, "slow:1"),
                kwargs={"body": {"options": {"num_predict": 1}}},
            )
            waiter.start()
            deadline = time.monotonic() + 10
            while srv.engine.scheduler.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            r = gen(srv.url, "slow:1")
            assert r.status_code == 503 and "queue" in r.json()["error"]
        waiter.join(30)


def test_request_timeout(tmp_path: Path) -> None:
    with running(settings(tmp_path, request_timeout=0.3)) as srv:
        r = gen(srv.url, "slow:1")
        assert r.status_code == 504 and "timed out" in r.json()["error"]
        with httpx.stream(
            "POST", srv.url + "/api/generate", json={"model": "slow:1", "prompt": "x"}
        ) as s:
            lines = [json.loads(x) for x in s.iter_lines() if x]
        assert "timed out" in lines[-1]["error"] and len(lines) > 3


def test_cors(tmp_path: Path) -> None:
    with running(settings(tmp_path, cors_origins=["http://app.example"])) as srv:
        r = httpx.options(
            srv.url + "/api/chat",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = httpx.options(
            srv.url + "/api/chat",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in r.headers


def test_disconnect_frees_the_slot_and_stops_generation(tmp_path: Path) -> None:
    with running(settings(tmp_path, num_parallel=1)) as srv:
        with httpx.stream(
            "POST", srv.url + "/api/generate", json={"model": "slow:1", "prompt": "x"}
        ) as s:
            lines = s.iter_lines()
            for _ in range(5):
                next(lines)
        # the client is gone; its generation must stop and give the slot back at once
        start = time.monotonic()
        r = gen(srv.url, "slow:1", body={"options": {"num_predict": 2}})
        assert r.status_code == 200 and r.json()["eval_count"] == 2
        assert time.monotonic() - start < 5  # 2000 tokens at 20 ms would take 40 s
        before = metric(srv.url, "forge_generated_tokens_total")
        time.sleep(0.3)
        assert metric(srv.url, "forge_generated_tokens_total") == before
        assert (
            metric(
                srv.url,
                'forge_inferences_total{model="slow:1",outcome="cancelled",task="generate"}',
            )
            == 1
        )


def test_metrics_change_after_requests(tmp_path: Path) -> None:
    with running(settings(tmp_path)) as srv:
        before = metric(srv.url, "forge_requests_total")
        assert gen(srv.url).status_code == 200
        assert gen(srv.url, "nope").status_code == 404
        text = httpx.get(srv.url + "/metrics").text
        assert 'forge_requests_total{method="POST",route="/api/generate",status="200"} 1.0' in text
        assert 'route="/api/generate",status="404"' in text
        assert metric(srv.url, "forge_requests_total") >= before + 2
        assert metric(srv.url, "forge_generated_tokens_total") == 2
        assert metric(srv.url, "forge_prompt_tokens_total") == 2
        assert metric(srv.url, "forge_model_loads_total") == 1
        assert metric(srv.url, "forge_loaded_models") == 1
        assert metric(srv.url, "forge_time_to_first_token_seconds_count") == 1
        assert metric(srv.url, "forge_request_duration_seconds_count") >= 2
        assert 'forge_model_memory_bytes{backend="null",device="cpu",model="echo:1"}' in text


def test_ready_waits_for_preload(tmp_path: Path) -> None:
    add_null_model(tmp_path, "heavy:1", {"load_delay": 1.0})
    with running(settings(tmp_path, preload=["heavy:1"])) as srv:
        first = httpx.get(srv.url + "/ready")
        assert first.status_code == 503 and first.json()["status"] == "loading"
        deadline = time.monotonic() + 10
        while httpx.get(srv.url + "/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(srv.url + "/ready").json()["loaded"] == 1


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    from ferrousforge.api.server import bind
    from ferrousforge.errors import ConfigError

    first = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*--port"):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


async def test_replies_are_not_held_back_by_nagle() -> None:
    """asyncio turns Nagle off only on sockets whose proto is TCP: with it on, a reply written
    in two parts waited ~40 ms for the client's delayed ACK on every reused connection."""
    import asyncio
    import socket

    from ferrousforge.api.server import bind

    sock = bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
