"""HTTP serving against llama.cpp's own ``llama-server`` and against ``llama_cpp.server``.

    ./dev.sh bench                  # builds llama-server once (about 4 min), then runs this
    .venv/bin/python bench/serve.py [--model smollm2:135m] [--rounds 3] [--parallel 4]

Peers, each alone in its own process, rounds alternating, medians compared:
- ``forge serve --parallel N`` (continuous batching in the llama.cpp backend);
- ``llama-server --parallel N``, built from the llama-cpp-python wheel's vendored llama.cpp
  (``--llama-server PATH``; ``FORGE_LLAMA_SERVER``), the same GGUF, threads and total
  context (its slots split it: each gets ctx / N);
- ``llama_cpp.server`` (``pip install -e '.[bench]'``), the Python peer with one lock.

Printed as ratios measured in the same run (issue 13's targets): aggregate tokens/s of
64-token /v1/completions at 1, 4 and 8 concurrent clients (≥ 0.9 of llama-server; ≥ 4× of
llama_cpp.server at 4), p50 time to first token at 4 clients (≤ 1.2 × llama-server's), and
a chat's second turn against its first (≤ 0.5: the cached prefix), and embeddings (minilm:l6
on onnx) from 8 concurrent clients against the same requests one after another (≥ 3). Also
the single stream over HTTP against raw in-process llama.cpp. Not a test: these machines
are shared and noisy.
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
# about 15-20 tokens each, different per client (nothing shared but the model)
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle:",
    "Explain in simple words why the sky looks blue on a clear summer afternoon:",
    "List some practical tips for keeping houseplants healthy through a cold winter:",
    "Describe the main differences between a violin and a viola for a beginner:",
    "Summarize the plot of a mystery novel set on a train crossing the mountains:",
    "Give advice to a student who is learning to program for the very first time:",
    "Tell me about the history of bread and how people first started baking it:",
    "What should a traveller pack for a week of hiking in rainy northern forests:",
]
TOKENS = 64
SENTENCES = [  # 5-15 words each, one per embedding client
    "The cat sat on the warm mat by the door",
    "Stocks fell sharply on Monday morning",
    "She reads a book every evening before she goes to bed",
    "Rain is expected tomorrow in the north",
    "He plays the guitar in a small band with his old friends",
    "The train to Paris leaves at nine",
    "A kitten sleeps in the afternoon sun on the porch",
    "Machine learning models need a lot of good data",
]
LLAMA_SERVER = os.environ.get(
    "FORGE_LLAMA_SERVER",
    os.path.expanduser("~/.cache/ferrousforge/llama-server-0.3.36/llama-server"),
)


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


def complete(
    url: str, model: str, tokens: int, c: httpx.Client | None = None, prompt: str = PROMPT
) -> tuple[int, float, float]:
    """One streamed /v1/completions: (tokens, seconds, seconds to the first token)."""
    if c is None:
        with client() as c:
            return complete(url, model, tokens, c, prompt)
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, count = 0.0, 0
    with c.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            item = json.loads(line[6:])
            if item.get("choices") and item["choices"][0].get("text"):
                first = first or time.perf_counter() - start
                count += 1
            if item.get("usage"):
                count = int(item["usage"]["completion_tokens"])
    return count, time.perf_counter() - start, first


def load(url: str, model: str, clients: int, per_client: int) -> dict[str, float]:
    """Aggregate tokens/s, latency and time-to-first-token medians with ``clients``
    concurrent clients, each with a prompt of its own."""
    latencies: list[float] = []
    firsts: list[float] = []
    tokens = failed = 0
    lock = threading.Lock()

    def one_client(i: int, c: httpx.Client) -> None:
        nonlocal tokens, failed
        for _ in range(per_client):
            try:
                n, took, first = complete(url, model, TOKENS, c, PROMPTS[i % len(PROMPTS)])
            except httpx.HTTPError as e:  # counted and named, not a dead thread
                print(f"{url}: {clients} clients: {type(e).__name__}: {e}", file=sys.stderr)
                with lock:
                    failed += 1
                continue
            with lock:
                tokens += n
                latencies.append(took)
                firsts.append(first)

    https = [client() for _ in range(clients)]  # made before the clock starts
    start = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(i, c)) for i, c in enumerate(https)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in https:
        c.close()
    return {
        "tps": tokens / wall,
        "p50": statistics.median(latencies),
        "ttft": statistics.median(firsts),
        "failed": failed,
    }


def embeddings(url: str, model: str, repeat: int = 10) -> tuple[float, float]:
    """Requests/s of 8 clients each embedding one sentence at a time, all at once, and of
    the same requests sent one after another."""

    def send(c: httpx.Client, text: str) -> None:
        r = c.post(url + "/v1/embeddings", json={"model": model, "input": text})
        r.raise_for_status()

    with client() as c:
        send(c, SENTENCES[0])  # loads the model
        start = time.perf_counter()
        for _ in range(repeat):
            for text in SENTENCES:
                send(c, text)
        alone = repeat * len(SENTENCES) / (time.perf_counter() - start)
    https = [client() for _ in SENTENCES]
    gate = threading.Barrier(len(SENTENCES) + 1)

    def one_client(c: httpx.Client, text: str) -> None:
        gate.wait()
        for _ in range(repeat):
            send(c, text)

    pairs = zip(https, SENTENCES, strict=True)
    threads = [threading.Thread(target=one_client, args=a) for a in pairs]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    together = repeat * len(SENTENCES) / (time.perf_counter() - start)
    for c in https:
        c.close()
    return together, alone


def chat_turns(url: str, model: str) -> tuple[float, float]:
    """Time to first token of a chat's first turn and of its second (after the answer)."""
    history = [{"role": "user", "content": PROMPTS[0] * 4}]  # a long first turn
    times = []
    with client() as c:
        for follow in ("Now make it shorter.", None):
            start = time.perf_counter()
            first, text = 0.0, []
            body = {"model": model, "messages": history, "max_tokens": 32, "stream": True}
            with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"]
                    if delta and delta[0]["delta"].get("content"):
                        first = first or time.perf_counter() - start
                        text.append(delta[0]["delta"]["content"])
            times.append(first)
            if follow is None:
                break
            history += [
                {"role": "assistant", "content": "".join(text)},
                {"role": "user", "content": follow},
            ]
    return times[0], times[1]


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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=4096, help="the total context of each server")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--llama-server", default=LLAMA_SERVER)
    ap.add_argument("--no-python-peer", action="store_true", help="skip llama_cpp.server")
    ap.add_argument(
        "--embed-model", default="minilm:l6", help="the encoder of the embeddings run ('' skips)"
    )
    args = ap.parse_args()

    import ferrousforge as ff

    with ff.Engine(ff.Settings()) as engine:
        path = engine.pull(args.model).path
        if args.embed_model:  # its ONNX form, converted once
            engine.pull(args.embed_model)
            embed_form = engine.load(args.embed_model, backend="onnx").name
    env = os.environ | {"FORGE_NUM_CTX": str(args.ctx), "FORGE_THREADS": str(args.threads)}
    py, n, threads = sys.executable, str(args.parallel), str(args.threads)
    peers: dict[str, list[str]] = {
        "forge": [py, "-m", "ferrousforge", "serve", "--parallel", n, "--port", "{port}"],
        "llama-server": [
            args.llama_server, "--model", path, "--port", "{port}", "--host", "127.0.0.1",
            "--parallel", n, "--ctx-size", str(args.ctx), "--threads", threads,
            "--threads-batch", threads, "--cont-batching", "--alias", args.model,
        ],
    }  # fmt: skip
    if not os.access(args.llama_server, os.X_OK):
        print(f"no llama-server at {args.llama_server}: run ./dev.sh bench (it builds one)")
        del peers["llama-server"]
    if not args.no_python_peer:
        peers["llama_cpp.server"] = [
            py, "-m", "llama_cpp.server", "--model", path, "--port", "{port}",
            "--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", str(args.ctx),
            "--interrupt_requests", "False", "--model_alias", args.model,
        ]  # fmt: skip
    results: dict[str, list[dict[Any, Any]]] = {k: [] for k in peers}
    raw: list[dict[str, float]] = []
    for _ in range(args.rounds):
        raw.append(in_process(path, args.model, args))
        for name, cmd in peers.items():
            port = free_port()
            with server(
                [c.replace("{port}", str(port)) for c in cmd], port, env, args.model
            ) as url:
                print(f"{name} on {url}", file=sys.stderr)  # names the peer of an error
                row: dict[Any, Any] = {c: load(url, args.model, c, 2) for c in (1, 4, 8)}
                if name != "llama_cpp.server":
                    row["turns"] = chat_turns(url, args.model)
                if name == "forge":
                    stream_ttft(url, args.model)  # the first call of a route pays once
                    row["http"] = sorted(stream_ttft(url, args.model) for _ in range(3))[1]
                    if args.embed_model:
                        row["embed"] = embeddings(url, embed_form)
                results[name].append(row)

    for name, rows in results.items():
        if failed := sum(r[c]["failed"] for r in rows for c in (1, 4, 8)):
            print(f"{name}: {failed} requests failed (see above); its figures count the rest")

    def med(name: str, clients: int, field: str) -> float:
        return float(statistics.median(r[clients][field] for r in results[name]))

    print(
        f"machine: {os.cpu_count()} cpus, threads={args.threads}, model={args.model}, "
        f"total context {args.ctx}, --parallel {args.parallel}, median of {args.rounds} rounds"
    )
    raw_tps = statistics.median(r["tps"] for r in raw)
    http_tps = statistics.median(r["http"][1] for r in results["forge"])
    print(f"single stream   raw in-process {raw_tps:6.1f} tok/s   HTTP {http_tps:6.1f} tok/s"
          f"   ratio {http_tps / raw_tps:.3f}")  # fmt: skip
    for clients in (1, 4, 8):
        line = f"{clients} client{'s' if clients > 1 else ' '}  "
        for name in results:
            tps, p50 = med(name, clients, "tps"), med(name, clients, "p50")
            ttft = med(name, clients, "ttft") * 1e3
            line += f" {name} {tps:6.1f} tok/s (p50 {p50:.2f} s, ttft {ttft:.0f} ms)"
        print(line)
    for name, target in (("llama-server", "0.9"), ("llama_cpp.server", "4 at 4 clients")):
        if name in results:
            ratios = "  ".join(
                f"{c}: {med('forge', c, 'tps') / med(name, c, 'tps'):.2f}" for c in (1, 4, 8)
            )
            print(f"tok/s ratio against {name}: {ratios}  (target >= {target})")
    if "llama-server" in results:
        ttft = med("forge", 4, "ttft") / med("llama-server", 4, "ttft")
        print(f"p50 time to first token at 4 clients, ratio to llama-server: {ttft:.2f} (<= 1.2)")
    if args.embed_model:
        together = statistics.median(r["embed"][0] for r in results["forge"])
        alone = statistics.median(r["embed"][1] for r in results["forge"])
        print(
            f"embeddings ({embed_form}, onnx): 8 clients at once {together:.0f} req/s, one "
            f"after another {alone:.0f} req/s, ratio {together / alone:.2f} (>= 3)"
        )
    for name in ("forge", "llama-server"):
        if name in results:
            first = statistics.median(r["turns"][0] for r in results[name])
            second = statistics.median(r["turns"][1] for r in results[name])
            ms = f"{second * 1e3:.0f} / {first * 1e3:.0f} ms"
            print(f"{name}: chat turn 2 / turn 1 time to first token {ms} = {second / first:.2f}")


if __name__ == "__main__":
    main()
