"""``%%forge`` streaming against a direct Engine call, in one real kernel (issue 5 target).

    .venv/bin/python bench/notebook.py [--model smollm2:135m] [--runs 5] [--tokens 128]

Both sides run in the same Jupyter kernel (started by nbclient, so every display update of
``%%forge`` really travels to a client over ZeroMQ): the magic, re-rendering its output as
tokens arrive, against a plain ``engine.chat(..., stream=True)`` loop. Tokens/s is counted
from the first token to the last, runs alternate, medians are compared. Target: ≥ 0.95.
Not a test: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics

PROMPT = "Write a short story about a lighthouse keeper."

SETUP = """
%load_ext ferrousforge
import json, time
from ferrousforge import notebook
engine = notebook.shared()
engine.load({model!r})
options = {{"temperature": 0, "num_predict": {tokens}, "seed": 1}}

def direct():
    start, first, last = time.perf_counter(), None, None
    for chunk in engine.chat({model!r}, [{{"role": "user", "content": {prompt!r}}}],
                             stream=True, options=options):
        if chunk.text:
            first = first or time.perf_counter()
        if chunk.done:
            last, tokens = time.perf_counter(), chunk.stats.eval_count
    return (tokens - 1) / (last - first)

def magic():
    ip = get_ipython()
    ip.run_cell_magic("forge", {line!r}, {prompt!r})
    a = ip.user_ns["answer"]
    return (a.tokens - 1) / ((a.total_ms - a.first_token_ms) / 1e3)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()

    import nbclient
    from nbformat.v4 import new_code_cell, new_notebook

    line = f"{args.model} --temperature 0 --max-tokens {args.tokens} -o answer"
    setup = SETUP.format(model=args.model, tokens=args.tokens, prompt=PROMPT, line=line)
    cells = [new_code_cell(setup), new_code_cell("direct(); magic()  # warm")]
    for _ in range(args.runs):
        cells.append(new_code_cell('print(json.dumps({"direct": direct()}))'))
        cells.append(new_code_cell('print(json.dumps({"magic": magic()}))'))
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    rates: dict[str, list[float]] = {"direct": [], "magic": []}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("name") == "stdout" and out["text"].startswith("{"):
                for key, value in json.loads(out["text"]).items():
                    rates[key].append(value)
    direct, magic = statistics.median(rates["direct"]), statistics.median(rates["magic"])
    print(f"{args.model}, {args.tokens} tokens, medians of {args.runs}, one kernel")
    print(f"direct engine.chat stream   {direct:6.1f} tokens/s")
    print(f"%%forge (streamed display)  {magic:6.1f} tokens/s")
    print(f"ratio {magic / direct:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
