"""The example notebooks, executed by nbclient in a real kernel on the real models (slow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the jupyter extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the jupyter extra is not installed")
pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parent.parent / "examples"


def outputs(cell: dict[str, Any]) -> str:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        for value in output.get("data", {}).values():
            texts.append(value if isinstance(value, str) else str(value))
    return "\n".join(texts)


def execute(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home")).expanduser()
    if not (home / "manifests/library/smollm2/135m.json").is_file():
        pytest.skip(f"smollm2:135m is not in {home}; ./dev.sh test pulls it first")
    monkeypatch.setenv("FORGE_HOME", str(home))  # the kernel inherits this environment
    monkeypatch.delenv("FORGE_URL", raising=False)
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return list(nb.cells)


def test_quickstart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cells = execute("quickstart", monkeypatch, tmp_path)
    out = "\n".join(outputs(c) for c in cells)
    assert "smollm2:135m: llama_cpp on cpu" in out  # %forge load's summary line
    asked = next(c for c in cells if c.source.startswith("%%forge"))
    assert "Paris" in outputs(asked)  # the answer streamed into the cell
    assert "tokens/s, first token after" in out
    assert "similarity:" in out and "Traceback" not in out


def test_embeddings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = "\n".join(outputs(c) for c in execute("embeddings", monkeypatch, tmp_path))
    cat_kitten = float(out.split("cat ~ kitten:")[1].split()[0])
    cat_stock = float(out.split("cat ~ stock market:")[1].split()[0])
    assert cat_kitten >= 0.7 and cat_stock <= 0.2
    assert "no browser tab has answered yet" in out  # nbclient has no tab: the Future waits


def test_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cells = execute("backends", monkeypatch, tmp_path)
    out = "\n".join(outputs(c) for c in cells)
    assert "Traceback" not in out, out
    rows = {tuple(line.split()[:3]): line for line in out.splitlines() if line.strip()}
    for pair in (("torch", "cpu"), ("onnx", "cpu"), ("tvm", "cpu"), ("jax", "cpu")):
        found = [line for key, line in rows.items() if key[:2] == pair and "minilm" in key[2]]
        assert found and found[0].endswith(" ok"), out  # minilm:l6, or its -onnx/-tvm form
    for backend in ("onnx", "tvm"):  # the ONNX classifier made in the notebook
        assert rows[(backend, "cpu", "cls:latest")].endswith(" ok"), out
    assert float(out.split("jax ~ torch cosine:")[1].split()[0]) >= 0.9999
    assert "hashvec: 32 dims" in out
    assert "images: FP32[?, 3, 8, 8]" in out and "logits match numpy: True" in out
    assert "{'logits': (2, 10), 'probabilities': (2, 10)}" in out  # r = %forge infer ...
    assert "cls: 1 output in" in out and "probabilities   float32   [4, 10]" in out  # the table
    assert (
        "tensorflow matches keras: True" in out
        or "tensorflow is not installed here: pip install 'ferrousforge[tensorflow]'" in out
    )
