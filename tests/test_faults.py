"""Crash tests: SIGKILL a real ``forge serve`` in the middle of a change to the store, start
it again on the same home, and prove the store recovered (``kernel/faults.py``).

Each test starts its own servers (``python -m ferrousforge serve``) on 127.0.0.1, stops only
those, by PID, and bounds every wait. A fault point is armed with ``FORGE_FAULTS=<name>``;
every restart runs without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ferrousforge.store.manifest import Manifest
from ferrousforge.store.store import Store

from .conftest import FileServer, MakeGGUF
from .labharness import forge
from .nullmodels import add_null_model

pytestmark = pytest.mark.slow

START_TIMEOUT = 60.0  # seconds for `forge serve` to answer /health
WORDS = [f"w{i}" for i in range(200)]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def crash(self) -> None:
        """SIGKILL the server (this test started it) and reap it."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.died()

    def died(self) -> None:
        """Reap a server that was killed (by us or by a fault point)."""
        assert self.proc.wait(timeout=30) == -signal.SIGKILL, self.log.read_text()


def forge_env(home: Path, faults: str | None = None) -> dict[str, str]:
    """The environment for a forge process on ``home``."""
    env = {
        "FORGE_HOME": str(home),
        "FORGE_PULL_PRIVATE_HOSTS": "127.0.0.1",  # the loopback file server
        "FORGE_HF_ENDPOINT": "http://127.0.0.1:9",  # never the real hub from tests
        "FORGE_PIP_ARGS": '["--no-index"]',
        "FORGE_THREADS": "1",
    }
    if faults:
        env["FORGE_FAULTS"] = faults
    return env


@contextlib.contextmanager
def serve(home: Path, faults: str | None = None) -> Iterator[Server]:
    """A `forge serve` on ``home``, ready (its /health answers); stopped on exit if alive."""
    log = home.parent / f"serve-{time.monotonic_ns()}.log"
    with forge(["serve"], forge_env(home, faults), log, START_TIMEOUT) as (proc, url):
        yield Server(proc, url, log)


def blobs(home: Path) -> set[str]:
    return {p.name for p in (home / "blobs").glob("sha256-*")}


def partials(home: Path) -> list[Path]:
    partial = home / "partial"
    return sorted(partial.iterdir()) if partial.is_dir() else []


def consistent(home: Path) -> list[Manifest]:
    """Assert that nothing a crash left dangles in the store; return its models."""
    store = Store(home)
    models = store.list()
    assert store.check() == {}
    assert all(Path(m.path).exists() for m in models)
    assert not list((home / "manifests").rglob("*.tmp"))
    named = {Path(m.path).name for m in models if Path(m.path).parent == home / "blobs"}
    assert blobs(home) <= named, "a blob no manifest names"
    return models


def names(home: Path) -> set[str]:
    return {m.name for m in Store(home).list()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gguf_bytes(make: MakeGGUF, path: Path, n_vocab: int) -> bytes:
    """A valid GGUF of about ``n_vocab * 140`` bytes (a large token embedding)."""
    return make(path, n_vocab=n_vocab).read_bytes()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    add_null_model(home, "keep", {"reply": "still here"})
    return home


def test_kill_during_url_pull_keeps_the_partial_and_resumes(
    home: Path, http_server: FileServer, make_small_gguf: MakeGGUF, tmp_path: Path
) -> None:
    data = gguf_bytes(make_small_gguf, tmp_path / "big.gguf", 30_000)
    assert len(data) > 4 << 20
    url = http_server.add("/models/big.gguf", data)
    http_server.chunk_delay = 0.1  # 64 KiB per 100 ms: about 7 s for the whole file
    before = names(home)
    with serve(home) as server:
        body = {"model": url, "stream": True}
        with httpx.stream("POST", server.url + "/api/pull", json=body, timeout=30) as r:
            assert r.status_code == 200
            done = 0
            for line in r.iter_lines():
                event = json.loads(line)
                assert "error" not in event and event["status"] != "success", event
                done = event.get("completed", 0) if event.get("total") else 0
                if done >= 256 << 10:
                    break
            server.crash()
    assert 256 << 10 <= done < len(data)  # killed with some bytes done, not all

    with serve(home) as server:  # the startup sweep ran before /health answered
        assert names(home) == before  # no manifest for the half-done pull
        assert not blobs(home)
        consistent(home)
        staged = home / "partial" / hashlib.sha256(url.encode()).hexdigest()
        part = staged.with_name(staged.name + ".partial")
        assert part.is_file() and 0 < part.stat().st_size < len(data)
        assert staged.with_name(staged.name + ".partial.json").is_file()

        http_server.chunk_delay = 0
        r2 = httpx.post(server.url + "/api/pull", json={"model": url, "stream": False}, timeout=60)
        assert r2.status_code == 200, r2.text
        assert r2.json() == {"status": "success", "model": "big:latest"}
    ranges = [h.get("Range") for p, h in http_server.requests if p == "/models/big.gguf"]
    assert ranges[0] is None and ranges[-1] not in (None, "bytes=0-")  # it resumed
    models = {m.name: m for m in consistent(home)}
    assert set(models) == before | {"big:latest"}
    assert models["big:latest"].sha256 == hashlib.sha256(data).hexdigest()
    assert sha256(Path(models["big:latest"].path)) == hashlib.sha256(data).hexdigest()
    assert not partials(home)


def test_kill_during_a_stream_leaves_the_store_alone(home: Path) -> None:
    add_null_model(home, "slow", {"reply": " ".join(WORDS), "token_delay": 0.05})
    before = names(home)
    with serve(home) as server:
        body = {"model": "slow", "prompt": "hi"}
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=30) as r:
            assert r.status_code == 200
            lines = []
            for line in r.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == 3:
                    break
            server.crash()
    assert [c["response"] for c in lines] == ["w0 ", "w1 ", "w2 "]

    with serve(home) as server:
        assert names(home) == before
        consistent(home)
        short = {"model": "slow", "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
        r = httpx.post(server.url + "/api/generate", json=short, timeout=30)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["done"] is True and answer["response"].split() == WORDS[:4]


@pytest.fixture
def two_pulled(home: Path, http_server: FileServer, make_small_gguf: MakeGGUF) -> Store:
    """Models ``a`` and ``b`` pulled from two URLs: each has its own blob in home/blobs."""
    for name, n_vocab in (("a", 400), ("b", 500)):
        data = gguf_bytes(make_small_gguf, home.parent / f"{name}.gguf", n_vocab)
        Store(home).pull(http_server.add(f"/{name}.gguf", data))
    store = Store(home)
    assert len(blobs(home)) == 2
    assert store.get("a").path != store.get("b").path
    return store


def test_kill_during_cp_over_an_existing_destination(home: Path, two_pulled: Store) -> None:
    a, b = two_pulled.get("a"), two_pulled.get("b")
    before = names(home)
    with serve(home, faults="store.save") as server:
        body = {"source": "a", "destination": "b"}
        with pytest.raises(httpx.TransportError):  # the server dies before it answers
            httpx.post(server.url + "/api/copy", json=body, timeout=30)
        server.died()
    assert Store(home).get("b").path == a.path  # killed after the manifest was replaced,
    assert Path(b.path).is_file()  # before b's old blob was released

    with serve(home):
        models = {m.name: m for m in consistent(home)}
        assert set(models) == before
        assert models["b:latest"].path == a.path  # the copy was written before the kill
        assert blobs(home) == {Path(a.path).name}  # b's old blob was swept
        assert not Path(b.path).exists()


def test_kill_during_rm(home: Path, two_pulled: Store) -> None:
    a, b = two_pulled.get("a"), two_pulled.get("b")
    before = names(home)
    with serve(home, faults="store.rm") as server:
        with pytest.raises(httpx.TransportError):
            httpx.request("DELETE", server.url + "/api/delete", json={"model": "b"}, timeout=30)
        server.died()
    assert names(home) == before - {"b:latest"}  # killed after the manifest went,
    assert Path(b.path).is_file()  # before the blob was released

    with serve(home):
        assert {m.name for m in consistent(home)} == before - {"b:latest"}
        assert blobs(home) == {Path(a.path).name}  # b's blob was swept
        assert not Path(b.path).exists()


def test_kill_during_commit_of_a_pull(
    home: Path, http_server: FileServer, make_small_gguf: MakeGGUF
) -> None:
    data = gguf_bytes(make_small_gguf, home.parent / "c.gguf", 600)
    url = http_server.add("/c.gguf", data)
    before = names(home)
    with serve(home, faults="store.commit") as server:
        body = {"model": url, "stream": False}
        with pytest.raises(httpx.TransportError):
            httpx.post(server.url + "/api/pull", json=body, timeout=60)
        server.died()
    assert len(blobs(home)) == 1  # the crash left the blob, unnamed

    with serve(home):
        models = {m.name: m for m in consistent(home)}
        if "c:latest" in models:  # present only if verified (consistent checked its sha256)
            assert models["c:latest"].sha256 == hashlib.sha256(data).hexdigest()
        else:
            assert set(models) == before and not blobs(home)  # no orphan blob
        assert not partials(home)


def _with_file_size_limit(limit: int, *args: str) -> list[str]:
    """``forge *args`` in a child whose writes past ``limit`` bytes fail with EFBIG (no
    SIGXFSZ). The child sets the limit itself: a ``preexec_fn`` would fork this process,
    which other tests have made multithreaded (jax warns of a deadlock, rightly)."""
    code = (
        "import resource, runpy, signal, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "sys.argv = ['forge', *sys.argv[1:]]\n"
        "runpy.run_module('ferrousforge', run_name='__main__', alter_sys=True)\n"
    )
    return [sys.executable, "-c", code, *args]


def test_a_full_disk_mid_pull_leaves_nothing_half_written(
    home: Path, http_server: FileServer, make_small_gguf: MakeGGUF, tmp_path: Path
) -> None:
    data = gguf_bytes(make_small_gguf, tmp_path / "huge.gguf", 16_000)
    limit = 1 << 20
    assert len(data) > 2 * limit
    url = http_server.add("/huge.gguf", data)
    before = names(home)
    r = subprocess.run(
        _with_file_size_limit(limit, "pull", url),
        env=forge_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()  # the progress status lines ("pulling huge.gguf"), then:
    assert lines[-1] == (
        f"Error: cannot store {url}: File too large; free some disk space and pull again"
    ), r.stderr
    assert [line for line in lines if line.startswith("Error")] == lines[-1:]
    assert "Traceback" not in r.stderr
    assert names(home) == before  # no manifest
    assert not blobs(home)
    assert not partials(home)  # the partial is deleted on a full disk
    consistent(home)
