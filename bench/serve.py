"""HTTP serving against in-process llama.cpp and against the peer ``llama_cpp.server``.

    .venv/bin/pip install -e '.[bench]'      # the peer's extra dependencies
    .venv/bin/python bench/serve.py [--model smollm2:135m] [--rounds 5]

1. single stream: ``forge serve`` tokens/s over HTTP ÷ raw in-process Llama (target ≥ 0.95)
2. against llama_cpp.server (interrupt_requests off, same file, threads and context), on the
   same OpenAI /v1/completions requests: aggregate tokens/s and p50/p95 latency at 1 and 4
   concurrent clients (target: at least equal at 1 client)
3. time to first token: streamed over HTTP against in-process Engine

Each server runs alone, in its own process, one at a time; rounds alternate between them
and medians are compared. Not a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

PROMPT = "The history of the printing press begins"
TOKENS = 64


def client() -> httpx.Client:
    """An HTTP client that sends small writes at once. Without TCP_NODELAY, httpx's separate
    header and body writes meet the server's delayed ACK and add ~40 ms to every request."""
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(transport=httpx.HTTPTransport(socket_options=nodelay), timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(cmd: list[str], port: int, env: dict[str, str], model: str) -> Iterator[str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2]} did not start")
            time.sleep(0.2)
        complete(url, model, 8)  # load the model before timing
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def complete(url: str, model: str, tokens: int, c: httpx.Client | None = None) -> tuple[int, float]:
    if c is None:
        with client() as c:
            return complete(url, model, tokens, c)
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}
    start = time.perf_counter()
    r = c.post(url + "/v1/completions", json=body)
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), time.perf_counter() - start


def load(url: str, model: str, clients: int, per_client: int) -> dict[str, float]:
    """Aggregate tokens/s and latency percentiles with ``clients`` concurrent clients."""
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def one_client(c: httpx.Client) -> None:
        nonlocal tokens
        for _ in range(per_client):
            n, took = complete(url, model, TOKENS, c)
            with lock:
                tokens += n
                latencies.append(took)

    https = [client() for _ in range(clients)]  # made before the clock starts
    start = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(c,)) for c in https]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in https:
        c.close()
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"tps": tokens / wall, "p50": statistics.median(latencies), "p95": q[18]}


def stream_ttft(url: str, model: str) -> tuple[float, float]:
    """(time to first token, tokens/s) of one streamed /api/generate over HTTP."""
    body = {
        "model": model,
        "prompt": PROMPT,
        "raw": True,
        "options": {"temperature": 0, "num_predict": 128},
    }
    with client() as c:  # an httpx client costs ~40 ms to make (its SSL context): not timed
        return _stream_ttft(c, url, body)


def _stream_ttft(c: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    with c.stream("POST", url + "/api/generate", json=body) as r:
        for line in r.iter_lines():
            item = json.loads(line)
            first = first or time.perf_counter() - start
            if item.get("done"):
                return first, item["eval_count"] / (time.perf_counter() - start)
    raise RuntimeError("stream ended without a final chunk")


def in_process(path: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    """Raw Llama tokens/s and Engine time to first token, in a fresh process."""
    code = f"""
import json, time, llama_cpp, ferrousforge as ff
llm = llama_cpp.Llama({path!r}, n_ctx={args.ctx}, n_threads={args.threads},
                      n_threads_batch={args.threads}, verbose=False)
llm.create_completion({PROMPT!r}, max_tokens=8, temperature=0.0)
t = time.perf_counter()
out = llm.create_completion({PROMPT!r}, max_tokens=128, temperature=0.0, top_k=40, top_p=0.9,
                            repeat_penalty=1.1)
tps = out["usage"]["completion_tokens"] / (time.perf_counter() - t)
del llm
with ff.Engine(ff.Settings(num_ctx={args.ctx}, threads={args.threads})) as e:
    e.load({model!r})
    e.generate({model!r}, {PROMPT!r}, raw=True, options={{"num_predict": 8}})
    t = time.perf_counter()
    next(e.generate({model!r}, {PROMPT!r}, raw=True, stream=True,
                    options={{"temperature": 0, "num_predict": 128}}))
    ttft = time.perf_counter() - t
print(json.dumps({{"tps": tps, "ttft": ttft}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import ferrousforge as ff

    with ff.Engine(ff.Settings()) as engine:
        path = engine.pull(args.model).path
    env = os.environ | {"FORGE_NUM_CTX": str(args.ctx), "FORGE_THREADS": str(args.threads)}
    py = sys.executable
    results: dict[str, list[Any]] = {
        k: [] for k in ("raw", "http", "forge1", "peer1", "forge4", "peer4")
    }
    for _ in range(args.rounds):
        results["raw"].append(in_process(path, args.model, args))
        port = free_port()
        with server(
            [py, "-m", "ferrousforge", "serve", "--port", str(port)], port, env, args.model
        ) as url:
            stream_ttft(url, args.model)  # the first call of a route pays one-time costs
            runs = sorted(stream_ttft(url, args.model) for _ in range(3))
            results["http"].append(runs[1])  # the median of three
            results["forge1"].append(load(url, args.model, 1, 3))
            results["forge4"].append(load(url, args.model, 4, 2))
        port = free_port()
        peer = [
            py,
            "-m",
            "llama_cpp.server",
            "--model",
            path,
            "--port",
            str(port),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--n_ctx",
            str(args.ctx),
            "--interrupt_requests",
            "False",
        ]
        with server(peer, port, env, args.model) as url:
            results["peer1"].append(load(url, args.model, 1, 3))
            results["peer4"].append(load(url, args.model, 4, 2))

    def med(key: str, field: str) -> float:
        return float(statistics.median(r[field] for r in results[key]))

    raw_tps, raw_ttft = med("raw", "tps"), med("raw", "ttft")
    http_ttft = statistics.median(r[0] for r in results["http"])
    http_tps = statistics.median(r[1] for r in results["http"])
    print(
        f"machine: {os.cpu_count()} cpus, threads={args.threads}, model={args.model}, "
        f"ctx={args.ctx}, median of {args.rounds} rounds"
    )
    print(
        f"single stream   raw in-process {raw_tps:6.1f} tok/s   HTTP {http_tps:6.1f} tok/s"
        f"   ratio {http_tps / raw_tps:.3f}  (target >= 0.95)"
    )
    print(
        f"first token     in-process {raw_ttft * 1e3:6.1f} ms   HTTP {http_ttft * 1e3:6.1f} ms"
        f"   +{(http_ttft - raw_ttft) * 1e3:.1f} ms"
    )
    for n in (1, 4):
        f, p = f"forge{n}", f"peer{n}"
        print(
            f"{n} client{'s' if n > 1 else ' '}       forge {med(f, 'tps'):6.1f} tok/s "
            f"p50 {med(f, 'p50'):5.2f} s p95 {med(f, 'p95'):5.2f} s | llama_cpp.server "
            f"{med(p, 'tps'):6.1f} tok/s p50 {med(p, 'p50'):5.2f} s p95 {med(p, 'p95'):5.2f} s"
            f" | ratio {med(f, 'tps') / med(p, 'tps'):.2f}"
        )


if __name__ == "__main__":
    main()
