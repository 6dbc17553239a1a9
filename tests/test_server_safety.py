"""Loads, timeouts, accounting and keys under pressure: shared loads survive a waiter's
timeout, slow clients and slow pulls cannot hold what others need, tokens always count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import jwt
import pytest

import ferrousforge as ff
from ferrousforge.errors import Interrupted, ModelNotFound

from .apiserver import running
from .conftest import FileServer
from .labharness import forge
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

SLOW_LOAD = {"load_delay": 0.5, "reply": "a b c"}


# -- loads -------------------------------------------------------------------------------


async def test_a_waiter_leaving_never_cancels_a_shared_load(tmp_path: Path) -> None:
    add_null_model(tmp_path, "heavy:1", SLOW_LOAD)
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path))
    try:
        first = asyncio.create_task(engine.generate("heavy:1", "x"))  # starts the load
        await asyncio.sleep(0.05)
        second = asyncio.create_task(engine.generate("heavy:1", "y"))  # waits on it
        await asyncio.sleep(0.05)
        first.cancel()  # as a request timeout does
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (await second).text == "a b c "
        assert engine.scheduler.loads == 1  # one load, finished, shared
    finally:
        await engine.close()


async def test_a_timed_out_load_is_kept_within_the_budget_not_leaked(tmp_path: Path) -> None:
    add_null_model(tmp_path, "heavy:1", SLOW_LOAD | {"memory": 600})
    add_null_model(tmp_path, "other:1", {"memory": 600})
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path, max_memory=1000))
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.generate("heavy:1", "x"), 0.1)
        await asyncio.sleep(0.7)  # the load went on, and is registered: counted, reapable
        assert [m.name for m in await engine.ps()] == ["heavy:1"]
        assert (await engine.generate("other:1", "z")).text == "z "  # evicts it, in budget
        assert [m.name for m in await engine.ps()] == ["other:1"]
    finally:
        await engine.close()


async def test_a_cancelled_load_is_a_503_for_its_waiters(tmp_path: Path) -> None:
    add_null_model(tmp_path, "heavy:1", {"load_delay": 5})
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path))
    waiter = asyncio.create_task(engine.generate("heavy:1", "x"))
    await asyncio.sleep(0.1)
    await engine.scheduler.close()  # shutting down cancels the load itself
    with pytest.raises(Interrupted) as e:
        await waiter
    assert e.value.status == 503 and "cancelled" in str(e.value)
    await engine.close()


def test_timeouts_answer_json_with_their_status(tmp_path: Path) -> None:
    add_null_model(tmp_path, "heavy:1", {"load_delay": 1.0})
    with running(ff.Settings(home=tmp_path, request_timeout=0.2)) as srv:
        r = httpx.post(srv.url + "/api/generate", json={"model": "heavy:1", "prompt": "x"})
        assert r.status_code == 504 and "timed out" in r.json()["error"]
        time.sleep(1.2)  # the load finished in the background: the next request is served
        body = {"model": "heavy:1", "prompt": "x", "stream": False}
        assert httpx.post(srv.url + "/api/generate", json=body).status_code == 200
        assert srv.engine.scheduler.loads == 1


def test_slow_pulls_cannot_starve_devices_or_unloads(
    tmp_path: Path, http_server: FileServer
) -> None:
    """Pulls run on threads of their own: eight slow downloads (more threads than the
    default executor has on 2 cores) leave device probes and unloads free to answer."""
    add_null_model(tmp_path, "echo:1", {})
    data = write_tiny_gguf(tmp_path / "t.gguf").read_bytes()
    http_server.chunk_delay = 0.4
    settings = ff.Settings(home=tmp_path, pull_private_hosts=["127.0.0.1"], max_pulls=2)

    def pull(url: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server may stop first
            httpx.post(srv.url + "/api/pull", json={"model": url, "stream": False}, timeout=60)

    with running(settings) as srv:
        urls = [http_server.add(f"/m{i}.gguf", data * 40) for i in range(8)]
        pullers = [threading.Thread(target=pull, args=(url,)) for url in urls]
        for t in pullers:
            t.start()
        deadline = time.monotonic() + 10
        while srv.engine.pulls.waiting < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(srv.url + "/api/forge/devices", timeout=60).status_code == 200
        gen = {"model": "echo:1", "prompt": "a", "stream": False}
        assert httpx.post(srv.url + "/api/generate", json=gen).status_code == 200
        r = httpx.post(srv.url + "/api/generate", json={"model": "echo:1", "keep_alive": 0})
        assert r.json()["done_reason"] == "unload"
        assert srv.engine.pulls.waiting >= 4  # answered while the pulls still queue
    for t in pullers:
        t.join(60)


# -- clients that stop reading or leave --------------------------------------------------


def test_a_client_that_stops_reading_loses_its_slot(tmp_path: Path) -> None:
    add_null_model(tmp_path, "firehose:1", {"reply": ("x" * 2000 + " ") * 20000})
    add_null_model(tmp_path, "echo:1", {})
    settings = ff.Settings(home=tmp_path, num_parallel=1, send_timeout=1.0)
    with running(settings) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        body = json.dumps({"model": "firehose:1", "prompt": "x"}).encode()
        head = f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}"
        sock.sendall(head.encode() + b"\r\ncontent-type: application/json\r\n\r\n" + body)
        try:  # never read: the server's buffers fill, its send waits, then gives up
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = srv.engine.loaded()
                if rows and rows[0].in_use == 0:
                    break
                time.sleep(0.1)
            assert srv.engine.loaded()[0].in_use == 0
            gen = {"model": "firehose:1", "prompt": "x", "stream": False,
                   "options": {"num_predict": 2}}  # fmt: skip
            assert httpx.post(srv.url + "/api/generate", json=gen, timeout=30).is_success
        finally:
            sock.close()


def test_tokens_before_a_disconnect_or_timeout_count(tmp_path: Path) -> None:
    add_null_model(tmp_path, "slow:1", {"reply": "tok " * 200, "token_delay": 0.01})
    settings = ff.Settings(home=tmp_path, rate_limit_tpm=30, request_timeout=0.5)
    with running(settings) as srv:
        body = {"model": "slow:1", "prompt": "x"}
        with httpx.stream("POST", srv.url + "/api/generate", json=body) as r:
            lines = r.iter_lines()
            for _ in range(35):  # 35 tokens streamed, then the client leaves
                next(lines)
        time.sleep(0.3)
        r = httpx.post(srv.url + "/api/generate", json=body | {"stream": False})
        assert r.status_code == 429 and "token budget" in r.json()["error"]
    with running(settings.model_copy(update={"rate_limit_tpm": 20})) as srv:
        r = httpx.post(srv.url + "/api/generate", json=body | {"stream": False})
        assert r.status_code == 504  # ~50 tokens made before the timeout hit
        r = httpx.post(srv.url + "/api/generate", json=body | {"stream": False})
        assert r.status_code == 429


def test_metrics_labels_stay_bounded(tmp_path: Path) -> None:
    with running(ff.Settings(home=tmp_path)) as srv:
        for method in ("BREW", "PROPFIND", "X" * 200, "GET"):
            httpx.request(method, srv.url + f"/nope-{method[:5]}")
        text = httpx.get(srv.url + "/metrics").text
        methods = {
            ln.split('method="')[1].split('"')[0]
            for ln in text.splitlines()
            if ln.startswith("forge_requests_total{")
        }
        assert methods == {"GET", "other"}
        assert 'route="unmatched"' in text and "nope" not in text


def test_ps_answers_when_a_loaded_models_manifest_is_removed(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {})
    with running(ff.Settings(home=tmp_path)) as srv:
        assert httpx.post(srv.url + "/api/generate", json={"model": "echo:1"}).is_success
        (tmp_path / "manifests/library/echo/1.json").unlink()  # another process's rm
        r = httpx.get(srv.url + "/api/ps")
        assert r.status_code == 200 and r.json()["models"][0]["name"] == "echo:1"
        with pytest.raises(ModelNotFound):
            srv.engine.store.get("echo:1")


# -- keys --------------------------------------------------------------------------------


def test_docs_and_schema_follow_the_api_key(tmp_path: Path) -> None:
    with running(ff.Settings(home=tmp_path, api_keys=["k"])) as srv:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(srv.url + path).status_code == 401
            r = httpx.get(srv.url + path, headers={"Authorization": "Bearer k"})
            assert r.status_code == 200
    with running(ff.Settings(home=tmp_path)) as srv:
        assert httpx.get(srv.url + "/openapi.json").json()["info"]["title"] == "FerrousForge"


def test_jwt_leeway_is_a_setting(tmp_path: Path) -> None:
    secret = "s" * 40
    late = {"sub": "ada", "exp": int(time.time()) - 5}
    token = jwt.encode(late, secret, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    with running(ff.Settings(home=tmp_path, jwt_secret=secret)) as srv:
        assert httpx.get(srv.url + "/api/tags", headers=headers).status_code == 401
    with running(ff.Settings(home=tmp_path, jwt_secret=secret, jwt_leeway=30)) as srv:
        assert httpx.get(srv.url + "/api/tags", headers=headers).status_code == 200


def test_keys_from_the_environment_and_files_stay_out_of_ps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_API_KEYS", "alpha, beta")
    assert ff.Settings(home=tmp_path).api_keys == ["alpha", "beta"]
    monkeypatch.setenv("FORGE_API_KEYS", '["gamma"]')
    assert ff.Settings(home=tmp_path).api_keys == ["gamma"]
    keys = tmp_path / "keys"
    keys.write_text("delta\n")
    env = {"FORGE_HOME": str(tmp_path)}
    with forge(["web", "--api-key", f"@{keys}"], env, tmp_path / "web.log") as (proc, url):
        assert httpx.get(url + "/api/tags").status_code == 401
        assert httpx.get(url + "/api/tags", headers={"Authorization": "Bearer delta"}).is_success
        assert httpx.get(url + "/web/models.json").status_code == 401
        assert "delta" not in " ".join(proc_cmdline(proc.pid))


def proc_cmdline(pid: int) -> list[str]:
    import psutil

    return list(psutil.Process(pid).cmdline())
