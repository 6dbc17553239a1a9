"""minilm:l6 embeddings: ms per batch on each backend, against what a user would write.

    .venv/bin/python bench/embed.py [--runs 7] [--tune 46] [--no-tvm] [--no-wgpu]

The baseline is sentence-transformers-style torch eager: ``transformers`` AutoTokenizer and
AutoModel, mean pooling and L2 norm in torch. Batches of 32 and of 1; medians; all in one
process, one after another, with the same threads. Target: our best backend ≥ 1.3× faster
than the baseline at batch 32. Not a test: these machines are shared and noisy.

TVM runs untuned and tuned (``--tune`` trials per compiled shape; about 5 minutes per 46
trials here). wgpu runs on whatever adapter it finds first (lavapipe here: a CPU rasterizer,
so its figure says nothing about a GPU). Slow backends are timed with fewer runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "a cat sits",
    "a kitten is sitting",
    "stock market",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors.",
    "Paris is the capital of France.",
    "Local inference keeps data on the machine.",
]
BATCH = (SENTENCES * 2)[:32]


def timed(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def baseline(path: str, threads: int) -> Callable[[list[str]], object]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(texts: list[str]) -> object:
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)

    return embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tune", type=int, default=46, help="TVM trials per shape (0: skip tuned)")
    ap.add_argument("--no-tvm", action="store_true")
    ap.add_argument("--no-wgpu", action="store_true")
    args = ap.parse_args()

    import ferrousforge as ff
    from ferrousforge.convert import convert

    shapes = [(1, 16), (8, 16)]  # what BATCH and BATCH[:1] pad to, in slices of 8
    with ff.Engine(ff.Settings(threads=args.threads)) as engine:
        source = engine.pull("minilm:l6")
        derived = {m.format: m.name for m in engine.store.derived(source.name)}
        onnx = derived.get("onnx") or convert(engine.store, source.name, "onnx").name
        runs: list[tuple[str, str, str, int]] = [
            ("forge torch", source.name, "torch", args.runs),
            ("forge onnx", onnx, "onnx", args.runs),
        ]
        if not args.no_tvm:
            convert(engine.store, source.name, "tvm", shapes=shapes)
            engine.store.cp(f"{source.name}-tvm", f"{source.name}-tvm-untuned")
            runs.append(("forge tvm untuned", f"{source.name}-tvm-untuned", "tvm", 2))
            if args.tune:
                convert(engine.store, source.name, "tvm", shapes=shapes, tune=args.tune)
                runs.append((f"forge tvm {args.tune} trials", f"{source.name}-tvm", "tvm", 3))
        if not args.no_wgpu and "wgpu" in engine.backends.names():
            runs.append(("forge wgpu (1st adapter)", source.name, "wgpu", 2))
        base = baseline(source.path, args.threads)
        results: dict[str, tuple[float, float]] = {
            "torch eager (baseline)": (
                timed(lambda: base(BATCH), args.runs),
                timed(lambda: base(BATCH[:1]), args.runs),
            ),
        }
        for label, name, backend, count in runs:
            engine.load(name, backend=backend)
            where = next(p.device for p in engine.ps() if p.name == name)

            def run(texts: list[str], model: str = name) -> object:
                return engine.embed(model, texts)

            results[f"{label} [{where}]"] = (
                timed(lambda: run(BATCH), count),
                timed(lambda: run(BATCH[:1]), count),
            )
            engine.unload(name)

    ref32 = results["torch eager (baseline)"][0]
    print(
        f"machine: {os.cpu_count()} cpus, threads={args.threads}, minilm:l6, median of {args.runs}"
    )
    for label, (b32, b1) in results.items():
        print(f"{label:36s} batch 32 {b32:8.1f} ms  ({ref32 / b32:5.2f}x)   batch 1 {b1:7.1f} ms")
    best = min(v[0] for k, v in results.items() if k.startswith("forge"))
    print(f"best forge backend: {ref32 / best:.2f}x the baseline at batch 32 (target >= 1.3)")


if __name__ == "__main__":
    main()
