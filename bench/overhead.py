"""Engine overhead against raw llama-cpp-python, measured in the same run (issue 2 targets).

    .venv/bin/python bench/overhead.py [--model smollm2:135m] [--runs 5] [--tokens 128]

1. decode throughput: Engine.generate tokens/s ÷ raw Llama tokens/s (target ≥ 0.97)
2. cold first token: Engine() → first chunk, against Llama() → first token, imports done
   beforehand on both sides (target ≤ 1.1× raw + 50 ms); the import of ferrousforge
   itself is printed on its own line
3. RSS with the model loaded, ferrousforge's imports included (target ≤ raw + 60 MB)

Each side runs in its own process: two llama.cpp contexts driven from two threads of one
process would each get an OpenMP team, and with more OpenMP threads than cores both decode
at a third of their speed (DESIGN.md §6). Both use the same file, threads, context, prompt
and greedy sampling; runs alternate between the sides and the medians are compared.
Not a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

PROMPT = "The history of the printing press begins"


class Side:
    """A child process that loads the model one way and answers 'run N' with timings."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--model",
            args.model,
            "--path",
            args.path,
            "--ctx",
            str(args.ctx),
            "--threads",
            str(args.threads),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def run(self, tokens: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{tokens}\n")
        self.proc.stdin.flush()
        return float(self._read()["tps"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def child(kind: str, model: str, path: str, n_ctx: int, threads: int) -> None:
    import llama_cpp  # imports happen before the clock starts, on both sides
    import psutil

    imported = 0.0
    if kind == "engine":
        t0 = time.perf_counter()
        import ferrousforge as ff

        imported = time.perf_counter() - t0
    start = time.perf_counter()
    if kind == "raw":
        llm = llama_cpp.Llama(
            path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        stream = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0, stream=True)
        next(iter(stream))
        first = time.perf_counter() - start
        list(stream)

        def generate(n: int) -> int:
            out = llm.create_completion(
                PROMPT, max_tokens=n, temperature=0.0, top_k=40, top_p=0.9, repeat_penalty=1.1
            )
            return int(out["usage"]["completion_tokens"])  # type: ignore[index]
    else:
        engine = ff.Engine(ff.Settings(num_ctx=n_ctx, threads=threads))
        chunks = engine.generate(
            model, PROMPT, raw=True, stream=True, options={"temperature": 0, "max_tokens": 8}
        )
        next(chunks)
        first = time.perf_counter() - start
        list(chunks)

        def generate(n: int) -> int:
            r = engine.generate(
                model, PROMPT, raw=True, options={"temperature": 0, "max_tokens": n}
            )
            return r.stats.eval_count

    rss = psutil.Process().memory_info().rss
    sys.stdout.write(json.dumps({"first": first, "rss": rss, "import": imported}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        t = time.perf_counter()
        n = generate(int(line))
        sys.stdout.write(json.dumps({"tps": n / (time.perf_counter() - t)}) + "\n")
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.path, args.ctx, args.threads)
        return

    import ferrousforge as ff

    with ff.Engine(ff.Settings()) as engine:
        args.path = engine.pull(args.model).path
    firsts: dict[str, list[float]] = {"raw": [], "engine": []}
    rss: dict[str, list[float]] = {"raw": [], "engine": []}
    tps: dict[str, list[float]] = {"raw": [], "engine": []}
    imports: list[float] = []
    for _ in range(args.runs):
        sides = {kind: Side(kind, args) for kind in ("raw", "engine")}  # one at a time below
        for kind, side in sides.items():
            firsts[kind].append(side.ready["first"])
            rss[kind].append(side.ready["rss"])
        imports.append(sides["engine"].ready["import"])
        for kind, side in sides.items():
            side.run(8)  # warm
            tps[kind].append(side.run(args.tokens))
        for side in sides.values():
            side.close()

    med = {k: statistics.median(v) for k, v in tps.items()}
    print(
        f"machine: {os.cpu_count()} cpus, threads={args.threads}, model={args.model}, "
        f"ctx={args.ctx}, {args.tokens} tokens, median of {args.runs}"
    )
    print(
        f"decode            raw {med['raw']:7.1f} tok/s   engine {med['engine']:7.1f} tok/s"
        f"   ratio {med['engine'] / med['raw']:.3f}  (target >= 0.97)"
    )
    fr, fe = statistics.median(firsts["raw"]), statistics.median(firsts["engine"])
    print(
        f"cold first token  raw {fr * 1e3:7.1f} ms      engine {fe * 1e3:7.1f} ms  "
        f"   ratio {fe / fr:.2f}; engine - 1.1 x raw = {(fe - 1.1 * fr) * 1e3:+.1f} ms"
        "  (target <= +50 ms)"
    )
    print(f"import ferrousforge {statistics.median(imports) * 1e3:.0f} ms (not in the above)")
    mr, me = statistics.median(rss["raw"]) / 2**20, statistics.median(rss["engine"]) / 2**20
    print(
        f"RSS               raw {mr:7.1f} MiB     engine {me:7.1f} MiB     "
        f"engine - raw = {me - mr:+.1f} MiB  (target <= +60 MiB)"
    )


if __name__ == "__main__":
    main()
