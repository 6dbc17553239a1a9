"""The browser build's speed, in Debian's Chromium (issue 6 targets). Prints ratios.

    .venv/bin/python bench/browser.py [--runs 5] [--tokens 96] [--only ort,pyodide,wllama]

The page is the ``forge web --export`` tree (page, runtimes, models) served by a static
server with COOP/COEP, so WASM threads work as on any static host.

1. minilm:l6 embeddings of 32 sentences of mixed length, ms per batch: our ORT-web wasm
   Mold against transformers.js (``@huggingface/transformers``, ``allowRemoteModels=false``,
   the same ONNX file from a local path, fp32, mean pooling), same threads, separate tabs of
   one browser. Target ≥ 1.2×.
2. The Pyodide + WGSL Mold against ORT-web's webgpu provider, on SwiftShader. Ratio only:
   a software GPU says nothing about real ones.
3. wllama tokens/s in the page (decode) against native llama.cpp (the engine's llama_cpp
   backend, 2 threads) on the same machine, same prompt, greedy. Target ≥ 0.3×.

Not a test: these machines are shared and noisy. Uses the store at FORGE_HOME.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ferrousforge as ff
from ferrousforge.api import webapp
from ferrousforge.config import load_settings
from ferrousforge.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.webharness import chromium  # noqa: E402

TJS = ROOT / "node_modules/@huggingface/transformers"
WORDS = (
    "the quick brown fox jumps over a lazy dog while a small cat watches from the warm "
    "window and the market opens with prices rising across every sector of the economy"
).split()
TEXTS = [" ".join(WORDS[(i * 7) % 20 :][: 4 + (i * 11) % 28]) for i in range(32)]
PROMPT = "Write a short story about a lighthouse keeper."


def site(store: Store, models: list[str]) -> Path:
    """The exported app plus transformers.js and the model laid out as it expects."""
    out = store.home / "cache" / "bench-web"
    webapp.export(store, out, models)
    tjs = out / "tjs"
    (tjs / "ort").mkdir(parents=True, exist_ok=True)
    for name in ("transformers.min.js", "ort-wasm-simd-threaded.jsep.mjs"):
        shutil.copyfile(TJS / "dist" / name, tjs / name)
    nested = TJS / "node_modules/onnxruntime-web/dist"
    for path in nested.glob("ort-wasm-simd-threaded*"):  # its own ORT build's wasm files
        if path.suffix in (".mjs", ".wasm"):
            shutil.copyfile(path, tjs / "ort" / path.name)
    onnx = store.get("minilm:l6-onnx").file
    model = tjs / "models/minilm/onnx"
    model.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(onnx / name, model.parent / name)
    with contextlib.suppress(FileExistsError):
        os.link(onnx / "model.onnx", model / "model.onnx")  # 90 MB: a link, not a copy
    return out


class Handler(SimpleHTTPRequestHandler):
    """Static files under /web/ with COOP/COEP and the media types of webapp."""

    extensions_map = {  # noqa: RUF012 (the base class declares it so)
        **SimpleHTTPRequestHandler.extensions_map,
        **webapp.MEDIA_TYPES,
    }

    def translate_path(self, path: str) -> str:
        return super().translate_path(path.removeprefix("/web"))

    def end_headers(self) -> None:
        for key, value in webapp.ISOLATION.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static(folder: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


OURS = """
await forge.load('minilm:l6', {target: arg.target, runtime: arg.runtime, threads: 2});
const times = [];
let out;
for (let i = 0; i <= arg.runs; i++) {
  const t = performance.now();
  out = await forge.embed('minilm:l6', arg.texts);
  if (i > 0) times.push(performance.now() - t);  // the first run warms up
}
return {times, first: out.embeddings[0], info: forge.info('minilm:l6')};
"""
THEIRS = """
const { pipeline, env } = await import('/web/tjs/transformers.min.js');
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/web/tjs/models/';
env.backends.onnx.wasm.wasmPaths = '/web/tjs/ort/';
env.backends.onnx.wasm.numThreads = 2;
const extract = await pipeline('feature-extraction', 'minilm', {dtype: 'fp32', device: 'wasm'});
const times = [];
let out;
for (let i = 0; i <= arg.runs; i++) {
  const t = performance.now();
  out = await extract(arg.texts, {pooling: 'mean', normalize: true});
  if (i > 0) times.push(performance.now() - t);
}
return {times, first: Array.from(out.data.slice(0, out.dims[1])),
        threads: env.backends.onnx.wasm.numThreads};
"""
CHAT = """
await forge.load('smollm2:135m', {threads: 2});
const rates = [];
for (let i = 0; i < arg.runs; i++) {
  const r = await forge.generate(
    'smollm2:135m', arg.prompt, {maxTokens: arg.tokens, temperature: 0});
  rates.push(r.tokensPerSecond);
}
return {rates, info: forge.info('smollm2:135m')};
"""


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return float(dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5))


def in_tab(url: str, webgpu: bool, script: str, arg: dict[str, Any]) -> Any:
    with chromium(url, webgpu=webgpu) as page:
        return page.run(script, arg, timeout=1800)


def bench_ort(url: str, runs: int) -> None:
    arg = {"texts": TEXTS, "runs": runs, "target": "wasm"}
    ours = in_tab(url, False, OURS, arg)
    theirs = in_tab(url, False, THEIRS, arg)
    a, b = median(ours["times"]), median(theirs["times"])
    print(f"1. minilm:l6, {len(TEXTS)} sentences of mixed length, ms per batch (median, {runs})")
    print(f"   ours: ORT-web wasm ({ours['info']['threads']} threads)   {a:8.1f} ms")
    print(f"   transformers.js wasm ({theirs['threads']} threads)      {b:8.1f} ms")
    print(f"   agreement: cosine {cosine(ours['first'], theirs['first']):.6f} on the first text")
    print(f"   ratio: {b / a:.2f}x  (target >= 1.2x)")


def bench_pyodide(url: str, runs: int) -> None:
    texts = TEXTS[:3]
    arg = {"texts": texts, "runs": runs, "target": "webgpu"}
    pyodide = in_tab(url, True, OURS, arg | {"runtime": "pyodide"})
    ort = in_tab(url, True, OURS, arg | {"runtime": "ort"})
    a, b = median(pyodide["times"]), median(ort["times"])
    print(f"2. minilm:l6 on WebGPU (SwiftShader), {len(texts)} sentences, ms per batch")
    print(f"   Pyodide + WGSL (our kernels)   {a:10.1f} ms")
    print(f"   ORT-web webgpu                 {b:10.1f} ms")
    print(f"   agreement: cosine {cosine(pyodide['first'], ort['first']):.6f}")
    print(f"   ratio (ORT time / ours): {b / a:.2f}x  (SwiftShader: no claim about real GPUs)")


def native_rate(home: Path, tokens: int, runs: int) -> float:
    rates = []
    with ff.Engine(ff.Settings(home=home, threads=2)) as engine:
        for _ in range(runs + 1):
            reply = engine.chat(
                "smollm2:135m",
                [{"role": "user", "content": PROMPT}],
                options={"temperature": 0, "num_predict": tokens, "seed": 1},
            )
            rates.append(reply.stats.eval_count / (reply.stats.eval_duration / 1e9))
    return float(median(rates[1:]))


def bench_wllama(url: str, home: Path, runs: int, tokens: int) -> None:
    page = in_tab(url, False, CHAT, {"prompt": PROMPT, "runs": runs + 1, "tokens": tokens})
    browser = median(page["rates"][1:])
    native = native_rate(home, tokens, runs)
    print(f"3. smollm2:135m decode tokens/s, {tokens} tokens, greedy (median of {runs})")
    print(f"   wllama in the page ({page['info']['threads']} threads)   {browser:8.1f} tok/s")
    print(f"   native llama.cpp (2 threads)      {native:8.1f} tok/s")
    print(f"   ratio: {browser / native:.2f}x  (target >= 0.3x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=96)
    p.add_argument("--only", default="ort,pyodide,wllama")
    args = p.parse_args()
    if not webapp.built():
        sys.exit("web/vendor is not built: npm ci && npm run build")
    home = load_settings().home
    store = Store(home)
    only = set(args.only.split(","))
    models = ["minilm:l6-onnx"] + ["minilm:l6"] * ("pyodide" in only)
    models += ["smollm2:135m"] * ("wllama" in only)
    with static(site(store, models)) as url:
        if "ort" in only:
            bench_ort(url, args.runs)
        if "pyodide" in only:
            bench_pyodide(url, max(1, args.runs // 2))
        if "wllama" in only:
            bench_wllama(url, home, max(1, args.runs // 2), args.tokens)


if __name__ == "__main__":
    main()
