"""%forge and %%forge through the real IPython shell (globalipapp), on null-backend models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge import notebook
from ferrousforge.client import RemoteEngine
from ferrousforge.errors import ForgeError

from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

IPython = pytest.importorskip("IPython", reason="the jupyter extra is not installed")
from IPython.testing.globalipapp import start_ipython  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("home")
    add_null_model(home, "echo:1", {})
    add_null_model(home, "fixed:1", {"reply": "Paris is the capital of France ."})
    add_null_model(home, "json:1", {"reply": '{"city": "Paris"}'})
    add_null_model(home, "slow:1", {"reply": "one two three four five", "token_delay": 0.1})
    engine = ff.Engine(ff.Settings(home=home, keep_alive=600))
    notebook.use(engine)
    ip = start_ipython()
    ip.display_formatter.active_types = ip.display_formatter.format_types  # as in a notebook
    ip.run_line_magic("load_ext", "ferrousforge")
    yield ip
    engine.close()


def cell(ip: Any, line: str, body: str) -> Any:
    with capture_output() as cap:
        ip.run_cell_magic("forge", line, body)
    return cap


def line(ip: Any, text: str) -> Any:
    with capture_output() as cap:
        value = ip.run_line_magic("forge", text)
    return cap, value


def shown(cap: Any) -> str:
    return "\n".join(
        str(o.data.get("text/markdown", o.data.get("text/plain", ""))) for o in cap.outputs
    )


def test_cell_streams_interpolates_and_stores(shell: Any) -> None:
    shell.user_ns["city"] = "Lyon"
    cap = cell(shell, "echo:1 -o r --temperature 0.1 --max-tokens 3", "is {city} big ?")
    r = shell.user_ns["r"]
    assert r.text.split() == ["is", "Lyon", "big"] and r.done_reason == "length"
    assert r.tokens == 3 and r.ttft_ms is not None and r.total_ms >= r.ttft_ms
    assert "is Lyon big" in shown(cap) and not cap.stderr


def test_formats_render_at_the_end(shell: Any) -> None:
    cap = cell(shell, "json:1 --format json", "where?")
    assert any("application/json" in o.data for o in cap.outputs)
    cap = cell(shell, "fixed:1 --format code", "where?")
    assert any("Paris is the capital" in str(o.data.get("text/plain", "")) for o in cap.outputs)
    cap = cell(shell, "fixed:1 --format json", "where?")
    assert "not valid JSON" in cap.stderr


def test_history_and_system(shell: Any) -> None:
    line(shell, "clear")
    cell(shell, "echo:1 --history --system 'be brief' -o first", "hello there")
    cell(shell, "echo:1 --history -o second", "and again")
    roles = [m["role"] for m in shell.user_ns["second"].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert shell.user_ns["second"].messages[2]["content"].split() == ["hello", "there"]
    cell(shell, "echo:1 -o alone", "no memory")
    assert len(shell.user_ns["alone"].messages) == 1


def test_line_subcommands(shell: Any, tmp_path: Path) -> None:
    cap, _ = line(shell, "list")
    assert "echo:1" in cap.stdout and "FORMAT" in cap.stdout
    cap, _ = line(shell, "load echo:1 --backend null --device cpu --keep-alive 1h")
    assert "echo:1: null on cpu" in shown(cap) and "loaded in" in shown(cap)
    cap, _ = line(shell, "ps")
    assert "echo:1" in cap.stdout and "null" in cap.stdout
    cap, _ = line(shell, "devices")
    assert cap.stdout.splitlines()[1].startswith("cpu")
    _, manifest = line(shell, "show fixed:1")
    assert manifest.name == "fixed:1"
    cap, _ = line(shell, "unload echo:1")
    assert "echo:1: unloaded" in cap.stdout
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    cap, _ = line(shell, f"pull {gguf}")
    assert "gguf" in cap.stdout
    line(shell, "use fixed:1")
    cap = cell(shell, "-o d", "anything")
    assert shell.user_ns["d"].model == "fixed:1"
    _, answer = line(shell, "fixed:1 where is Paris?")
    assert answer == "Paris is the capital of France ."
    cap, _ = line(shell, "help")
    assert "%%forge [MODEL]" in cap.stdout


@pytest.mark.parametrize(
    ("magic", "body", "message"),
    [
        ("nope", "hi", "forge: model 'nope:latest' not found"),
        ("echo:1 --temperature warm", "hi", "forge: argument --temperature: invalid float"),
        ("echo:1 --format html", "hi", "forge: argument --format: invalid choice"),
        ("echo:1", "is {missing} here", "forge: unknown variable 'missing' in the prompt"),
    ],
)
def test_errors_are_one_line(shell: Any, magic: str, body: str, message: str) -> None:
    cap = cell(shell, magic, body)
    assert cap.stderr.startswith(message) and len(cap.stderr.strip().splitlines()) == 1
    assert "Traceback" not in cap.stdout + cap.stderr


def test_unreachable_engine_is_one_line(shell: Any) -> None:
    previous = notebook.shared()
    notebook.use(RemoteEngine("http://127.0.0.1:9"))
    try:
        cap, _ = line(shell, "list")
    finally:
        notebook.use(previous)
    assert cap.stderr.startswith("forge: engine at http://127.0.0.1:9 is unreachable")
    assert len(cap.stderr.strip().splitlines()) == 1


def test_background_frees_the_kernel_at_once(shell: Any) -> None:
    line(shell, "clear")
    start = time.perf_counter()
    cell(shell, "slow:1 --background --history -o later", "count")
    returned = time.perf_counter() - start
    future = shell.user_ns["later"]
    assert returned < 0.4 and not future.done()  # five tokens take half a second
    answer = future.result(timeout=10)
    assert answer.text.split() == ["one", "two", "three", "four", "five"]
    assert answer.ttft_ms is not None and answer.tokens == 5
    cell(shell, "echo:1 --history -o after", "next")
    assert [m["role"] for m in shell.user_ns["after"].messages] == ["user", "assistant", "user"]
    cell(shell, "nope --background -o failed", "hi")
    with pytest.raises(ForgeError, match="model 'nope:latest' not found"):
        shell.user_ns["failed"].result(timeout=10)


def test_browser_shows_a_widget_bound_to_a_name(shell: Any) -> None:
    pytest.importorskip("anywidget")
    from ferrousforge.widgets import BrowserMold

    cap, value = line(shell, "browser minilm:l6 --target wasm -o w")
    w = shell.user_ns["w"]
    assert value is None and isinstance(w, BrowserMold)
    assert (w.model, w.target, w.runtime, w.web_url) == ("minilm:l6", "wasm", None, "")
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)
    _, widget = line(shell, "browser smollm2:135m --web-url http://127.0.0.1:11434/web/")
    assert isinstance(widget, BrowserMold) and widget.target == "auto"  # shown as the result
    assert widget.web_url == "http://127.0.0.1:11434/web/"
    cap, _ = line(shell, "browser minilm:l6 --target gpu")
    assert cap.stderr.startswith("forge: argument --target: invalid choice")
    assert len(cap.stderr.strip().splitlines()) == 1


def test_infer_runs_a_tensor_model_on_your_arrays(shell: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy as np

    from ferrousforge.notebook.infer import Tensors

    from .tensormodels import images, onnxruntime_outputs, write_classifier

    graph = write_classifier(tmp_path / "classifier.onnx")
    notebook.shared().pull(str(graph), name="cls")
    x = shell.user_ns["x"] = images(3)
    want = onnxruntime_outputs(graph, {"images": x})
    cap, r = line(shell, "infer cls images=x")
    assert isinstance(r, Tensors) and list(r) == ["logits", "probabilities"] and not cap.stderr
    for name, array in want.items():
        np.testing.assert_allclose(r[name], array, rtol=1e-6, atol=1e-6)
    text = shell.display_formatter.format(r)[0]["text/plain"]  # how the cell shows it
    assert text.startswith("cls: 2 outputs in ") and "probabilities   float32   [3, 10]" in text
    first = f"{float(want['logits'].reshape(-1)[0]):.4g}"
    assert f"[{first}, " in text and "| `logits` | `float32` | `[3, 10]` |" in r._repr_markdown_()
    # a Python expression, spaces in brackets and quotes included; only the outputs asked for
    _, r = line(shell, "infer cls images=x[:2].astype('float32') --outputs probabilities")
    assert list(r) == ["probabilities"] and r["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(r["probabilities"], want["probabilities"][:2], atol=1e-6)
    # the cell form: the body is a dict of inputs; -o keeps the outputs and shows them
    cap = cell(shell, "infer cls -o out --outputs logits", '{"images": x[1:]}')
    np.testing.assert_allclose(shell.user_ns["out"]["logits"], want["logits"][1:], atol=1e-5)
    assert "logits" in shown(cap) and not cap.stderr
    cap, _ = line(shell, "help")
    assert "%forge infer MODEL NAME=EXPR" in cap.stdout and "%%forge infer MODEL" in cap.stdout


@pytest.mark.parametrize(
    ("magic", "body", "message"),
    [
        ("infer cls images=nothing", None, "forge: images: name 'nothing' is not defined"),
        ("infer cls images", None, "forge: 'images' is not NAME=EXPR"),
        ("infer cls images=x[", None, "forge: an unclosed bracket"),
        ("infer cls images=x.astype('float64')", None, "forge: input 'images' must be FP32"),
        ("infer cls", None, "forge: missing input 'images' (images: FP32[?, 3, 8, 8])"),
        ("infer cls images=x --outputs nope", None, "forge: unknown output 'nope'"),
        ("infer echo:1 images=x", None, "forge: echo:1 does not take tensors"),
        ("infer cls", "[x]", "forge: the cell must be a dict of inputs by name, not a list"),
        ("infer cls", "{'images': x", "forge: the cell: not a Python expression"),
    ],
)
def test_infer_errors_are_one_line(
    shell: Any, tmp_path: Path, magic: str, body: str | None, message: str
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from .tensormodels import images, write_classifier

    engine = notebook.shared()
    if not any(m.name == "cls:latest" for m in engine.list()):
        engine.pull(str(write_classifier(tmp_path / "classifier.onnx")), name="cls")
    shell.user_ns["x"] = images(1)
    if body is None:
        cap, value = line(shell, magic)
        assert value is None
    else:
        cap = cell(shell, magic, body)
    assert cap.stderr.startswith(message), cap.stderr
    assert len(cap.stderr.strip().splitlines()) == 1 and "Traceback" not in cap.stdout
