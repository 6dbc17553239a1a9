"""Engine overhead against raw llama-cpp-python, measured in the same run (issue 2 targets).

    .venv/bin/python bench/overhead.py [--model smollm2:135m] [--runs 5] [--tokens 128]

1. decode throughput: Engine.generate tokens/s ÷ raw Llama tokens/s (target ≥ 0.97)
2. cold first token: new Engine → first chunk, against Llama() + first token
   (target ≤ 1.1× raw + 50 ms)
3. RSS with the model loaded, each in a fresh process (target ≤ raw + 60 MB)

Both sides use the same file, threads, context, prompt and greedy sampling; runs are
interleaved and the medians compared. Not a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

PROMPT = "The history of the printing press begins"


def raw_llama(path: str, n_ctx: int, threads: int):
    import llama_cpp

    return llama_cpp.Llama(
        path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
    )


def raw_tps(llm, tokens: int) -> float:
    start = time.perf_counter()
    out = llm.create_completion(
        PROMPT, max_tokens=tokens, temperature=0.0, top_k=40, top_p=0.9, repeat_penalty=1.1
    )
    return float(out["usage"]["completion_tokens"]) / (time.perf_counter() - start)


def engine_tps(engine, model: str, tokens: int) -> float:
    start = time.perf_counter()
    r = engine.generate(model, PROMPT, raw=True, options={"temperature": 0, "max_tokens": tokens})
    return float(r.stats.eval_count) / (time.perf_counter() - start)


def median_of(fn: Callable[[], float], runs: int) -> list[float]:
    return [fn() for _ in range(runs)]


def child(kind: str, path: str, model: str, n_ctx: int, threads: int) -> None:
    """Runs in a fresh process: load, generate 8 tokens, report RSS and first-token time."""
    import psutil

    start = time.perf_counter()
    if kind == "raw":
        llm = raw_llama(path, n_ctx, threads)
        stream = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0, stream=True)
        next(iter(stream))
        first = time.perf_counter() - start
        list(stream)
    else:
        import ferrousforge as ff

        engine = ff.Engine(ff.Settings(num_ctx=n_ctx, threads=threads))
        stream = engine.generate(
            model, PROMPT, raw=True, stream=True, options={"temperature": 0, "max_tokens": 8}
        )
        next(stream)
        first = time.perf_counter() - start
        list(stream)
    rss = psutil.Process().memory_info().rss
    sys.stdout.write(json.dumps({"first": first, "rss": rss}) + "\n")


def in_child(kind: str, path: str, model: str, n_ctx: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--path",
            path,
            "--model",
            model,
            "--ctx",
            str(n_ctx),
            "--threads",
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child")
    ap.add_argument("--path")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.model, args.ctx, args.threads)
        return

    import ferrousforge as ff

    engine = ff.Engine(ff.Settings(num_ctx=args.ctx, threads=args.threads))
    path = engine.pull(args.model).path
    llm = raw_llama(path, args.ctx, args.threads)
    engine_tps(engine, args.model, 8)  # load and warm both
    raw_tps(llm, 8)
    raw_runs, eng_runs = [], []
    for _ in range(args.runs):  # interleaved, so drift hits both sides alike
        raw_runs.append(raw_tps(llm, args.tokens))
        eng_runs.append(engine_tps(engine, args.model, args.tokens))
    raw_med, eng_med = statistics.median(raw_runs), statistics.median(eng_runs)
    print(f"machine: {os.cpu_count()} cpus, threads={args.threads}, model={args.model}")
    print(
        f"decode  raw {raw_med:7.1f} tok/s   engine {eng_med:7.1f} tok/s   "
        f"ratio {eng_med / raw_med:.3f}  (target >= 0.97)"
    )
    engine.close()
    del llm

    firsts: dict[str, list[float]] = {"raw": [], "engine": []}
    rss: dict[str, list[float]] = {"raw": [], "engine": []}
    for _ in range(args.runs):
        for kind in ("raw", "engine"):
            r = in_child(kind, path, args.model, args.ctx, args.threads)
            firsts[kind].append(r["first"])
            rss[kind].append(r["rss"])
    fr, fe = statistics.median(firsts["raw"]), statistics.median(firsts["engine"])
    print(
        f"cold first token  raw {fr * 1000:7.1f} ms   engine {fe * 1000:7.1f} ms   "
        f"ratio {fe / fr:.2f}, engine - 1.1*raw = {(fe - 1.1 * fr) * 1000:+.1f} ms "
        "(target <= +50 ms)"
    )
    mr, me = statistics.median(rss["raw"]) / 2**20, statistics.median(rss["engine"]) / 2**20
    print(
        f"RSS  raw {mr:7.1f} MiB   engine {me:7.1f} MiB   engine - raw = {me - mr:+.1f} MiB "
        "(target <= +60 MiB)"
    )


if __name__ == "__main__":
    main()
