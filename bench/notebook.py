"""The notebook workbench's overheads, in a real kernel and a real browser (issue 5 targets).

    .venv/bin/python bench/notebook.py [--model smollm2:135m] [--runs 5] [--tokens 128]

1. ``%%forge`` against a direct Engine stream, both in one Jupyter kernel started by
   nbclient (so every display update of the magic really travels over ZeroMQ). Tokens/s from
   the first token to the last; runs alternate; medians. Target: ratio ≥ 0.95.
2. The Compare widget in a real JupyterLab on Debian's Chromium (tests/labharness.py): the
   time from the Run click to the frame that paints the first token, against the engine's
   time to first token as the kernel measured it for the same run. Medians; the difference
   is what the widget adds (messages, the kernel's iopub, the browser's render).

Not a test: these machines are shared and noisy. Uses the store at FORGE_HOME.
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
    return (a.tokens - 1) / ((a.total_ms - a.ttft_ms) / 1e3)
"""


def browser_ttft(model: str, runs: int) -> tuple[float, float]:
    """Medians of (first visible token - Run click, engine TTFT) for the Compare widget."""
    import os
    import sys
    import tempfile
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from ferrousforge.config import load_settings
    from ferrousforge.store.store import Store
    from tests.labharness import CHROMIUM, Notebook, running_lab, write_notebook

    root = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    store = Store(root / "home")
    store.save(Store(load_settings().home).get(model))  # the same blob, by its path
    notebooks = root / "notebooks"
    notebooks.mkdir()
    options = {"num_predict": 8, "temperature": 0}
    write_notebook(
        notebooks / "ttft.ipynb",
        f"from ferrousforge.widgets import Compare\nc = Compare([{model!r}], options={options})\nc",
        "print('ttft', c.results.answers[0].ttft_ms, 'run', c.results.run)",
    )
    visible, engine = [], []
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with (
        running_lab(root, store.home, notebooks, root / "unused.gguf") as lab,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        nb = Notebook(browser, lab, "ttft.ipynb")
        page = nb.page
        nb.run(0)
        page.locator(".ff-compare").wait_for()
        for run in range(1, runs + 2):  # the first loads the model: not counted
            page.fill(".ff-compare-prompt", "Say hello.")
            page.click(".ff-compare-run")
            page.wait_for_function(  # this run's first token, painted after this click
                """() => {
                    const root = document.querySelector(".ff-compare");
                    return root.dataset.state === "done"
                        && Number(root.dataset.firstTokenMs) > Number(root.dataset.runMs);
                }"""
            )
            clicked = float(page.get_attribute(".ff-compare", "data-run-ms") or 0)
            first = float(page.get_attribute(".ff-compare", "data-first-token-ms") or 0)
            m = nb.output(1, rf"ttft ([\d.]+) run {run}\b")
            if run > 1:
                visible.append(first - clicked)
                engine.append(float(m.group(1)))
        browser.close()
    return statistics.median(visible), statistics.median(engine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-browser", action="store_true", help="skip the JupyterLab part")
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
    if not args.no_browser:
        shown, engine = browser_ttft(args.model, args.runs)
        print(f"Compare widget in JupyterLab/Chromium, medians of {args.runs}:")
        print(f"engine time to first token (kernel side)  {engine:7.1f} ms")
        print(f"Run click -> first token painted           {shown:7.1f} ms")
        print(f"the widget adds {shown - engine:+.1f} ms ({shown / engine:.2f}x)")


if __name__ == "__main__":
    main()
