"""Many users at once over HTTP: 200 mixed requests from 16 threads on one batched model
(streamed and whole generations, chat, OpenAI completions, embeddings, tokenizing, clients
that leave mid-stream, refused requests). Afterwards nothing is leaked: no sequence, KV cell
or slot stays taken, as ``/api/ps``, ``/metrics`` and ``forge ps`` show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferrousforge as ff

from .apiserver import running
from .tinymodel import write_tiny_gguf

pytest.importorskip("llama_cpp", reason="the llama extra is not installed")

WORDS = ["the cat", "a word of", "one and two", "when she", "it is", "we can"]


def one(client: httpx.Client, n: int) -> str:
    """Request ``n`` of the mix; returns its kind after checking its answer."""
    prompt = f"{WORDS[n % len(WORDS)]} {n}"
    kind = ["stream", "whole", "chat", "v1", "embed", "tokens", "leave", "refused"][n % 8]
    opts = {"num_predict": 4 + n % 13, "seed": n, "temperature": 0.8}
    if kind == "stream":
        with client.stream(
            "POST", "/api/generate", json={"model": "tiny", "prompt": prompt, "options": opts}
        ) as r:
            lines = [line for line in r.iter_lines() if line]
        assert r.status_code == 200 and '"done":true' in lines[-1].replace(" ", "")
    elif kind == "whole":
        r = client.post(
            "/api/generate",
            json={"model": "tiny", "prompt": prompt, "stream": False, "options": opts},
        )
        assert r.status_code == 200 and r.json()["eval_count"] >= 1
    elif kind == "chat":
        body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": prompt}]}
        r = client.post("/api/chat", json=body | {"stream": False, "options": opts})
        assert r.status_code == 200 and r.json()["done"]
    elif kind == "v1":
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 6, "stream": n % 16 < 8}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200
    elif kind == "embed":
        r = client.post("/api/embed", json={"model": "tiny", "input": [prompt, "and more"]})
        assert r.status_code == 200 and len(r.json()["embeddings"]) == 2
    elif kind == "tokens":
        r = client.post("/api/forge/tokenize", json={"model": "tiny", "text": prompt})
        assert r.status_code == 200 and r.json()["tokens"]
    elif kind == "leave":  # reads two lines of an endless generation, then hangs up
        body = {"model": "tiny", "prompt": prompt, "options": {"num_predict": -1, "seed": n}}
        with client.stream("POST", "/api/generate", json=body) as r:
            read = r.iter_lines()
            next(read), next(read)
    else:
        r = client.post("/api/generate", json={"model": "tiny", "prompt": [prompt]})
        assert r.status_code == 400
    return kind


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def test_200_mixed_requests_from_16_threads_leak_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", context_length=1024)
    with ff.Engine(ff.Settings(home=home)) as e:
        e.pull(str(gguf), name="tiny")
    settings = ff.Settings(home=home, threads=1, num_ctx=1024, keep_alive=-1)
    kinds: Counter[str] = Counter()
    errors: list[BaseException] = []
    with running(settings) as srv:
        queue = iter(range(200))
        lock = threading.Lock()

        def user() -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as client:
                while True:
                    with lock:
                        n = next(queue, None)
                    if n is None:
                        return
                    try:
                        kind = one(client, n)
                    except BaseException as exc:
                        errors.append(exc)
                        return
                    with lock:
                        kinds[kind] += 1

        threads = [threading.Thread(target=user) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert sum(kinds.values()) == 200 and len(kinds) == 8

        deadline = time.monotonic() + 10  # the streams that were left end within a token
        while True:
            (row,) = httpx.get(srv.url + "/api/ps").json()["models"]
            if row["running"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert row["slots"] == 4 and row["running"] == 0 and row["kv_used"] == 0
        assert 0 < row["kv_cached"] <= row["kv_total"] == 1024  # finished prompts, kept
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, 'forge_running_sequences{model="tiny:latest"}') == 0
        assert metric(text, 'forge_kv_cells{model="tiny:latest",state="used"}') == 0
        assert metric(text, "forge_queue_depth") == 0
        assert metric(text, 'forge_prompt_cache_hits_total{model="tiny:latest"}') >= 0
        assert metric(text, 'forge_batches_total{model="tiny:latest"}') > 0
        wide = re.findall(
            r'^forge_batch_width_total\{model="tiny:latest",width="(\d+)"\}', text, re.M
        )
        assert max(map(int, wide)) >= 2  # batches really carried several requests
        mold: Any = srv.engine.scheduler.runners["tiny:latest"].mold
        batcher = mold._batcher
        held = set(batcher._free) | set(batcher._cached)  # every seq id is free or a cache
        assert held == set(range(batcher.n_seq)) and not batcher._waiting
        assert srv.engine.scheduler.runners["tiny:latest"].slots.busy == 0

        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
        ps = subprocess.run(
            [sys.executable, "-m", "ferrousforge", "ps"],
            env=env | {"FORGE_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        line = next(x for x in ps.stdout.splitlines() if x.startswith("tiny:latest"))
        assert " 0/4 " in line and re.search(r" 0/1024 \(\+\d+ cached\)", line), ps.stdout
