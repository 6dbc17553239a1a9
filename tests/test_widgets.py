"""The widgets' Python side, driven without a browser: null-backend models, messages as the
front end sends them (``_handle_custom_msg``), and what goes back (``send``, traits)."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anywidget")

import ferrousforge as ff
from ferrousforge.widgets import BrowserError, BrowserMold, BrowserPending, Chat, Compare, Models
from ferrousforge.widgets import browser as browser_module
from ferrousforge.widgets.models import same_rows, table
from ferrousforge.widgets.similarity import similarity, word_cosine

from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

FIVE = "one two three four five"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ff.Engine]:
    home = tmp_path / "home"
    add_null_model(home, "five:1", {"reply": FIVE, "token_delay": 0.005})
    add_null_model(home, "four:1", {"reply": "one two six seven", "token_delay": 0.005})
    add_null_model(home, "slow:1", {"reply": " ".join(["word"] * 40), "token_delay": 0.05})
    add_null_model(home, "broken:1", {"reply": FIVE, "fail_after": 2})
    add_null_model(home, "heavy:1", {"load_delay": 1.0, "memory": 3 << 20})
    with ff.Engine(ff.Settings(home=home, keep_alive=300)) as engine:
        yield engine


def record(widget: Any) -> list[dict[str, Any]]:
    """Capture what the widget sends to the front end (there is no kernel here)."""
    sent: list[dict[str, Any]] = []
    widget.send = lambda content, buffers=None: sent.append(content)
    return sent


def click(widget: Any, content: dict[str, Any]) -> float:
    """Deliver a front-end message as the kernel would; return how long handling took."""
    start = time.perf_counter()
    widget._handle_custom_msg(content, [])
    return time.perf_counter() - start


def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_compare_run_streams_every_pane(engine: ff.Engine) -> None:
    c = Compare(["five:1", "four:1"], engine=engine)
    assert c.choices == ["broken:1", "five:1", "four:1", "heavy:1", "slow:1"]
    sent = record(c)
    result = c.run("hello")
    assert result is c.results and result is not None
    five, four = result.answers
    assert (five.model, five.text, five.tokens) == ("five:1", FIVE + " ", 5)
    assert (four.text, four.done_reason, four.error) == ("one two six seven ", "stop", None)
    for a in result.answers:
        assert a.ttft_ms is not None and 0 < a.ttft_ms < a.total_ms  # type: ignore[operator]
        assert (a.backend, a.device, a.memory) == ("null", "cpu", 1 << 20)
        assert a.tokens_per_s and a.tokens_per_s > 0
    assert result.similarity == pytest.approx(word_cosine(FIVE, "one two six seven"))
    assert result.similarity == pytest.approx(2 / (5**0.5 * 2))
    # what the front end saw: start, each pane's tokens in order, a done each, then end
    assert sent[0] == {"type": "start", "run": 1, "prompt": "hello", "models": c.models}
    tokens = [m for m in sent if m["type"] == "token" and m["pane"] == 0]
    assert "".join(m["text"] for m in tokens) == FIVE + " "
    assert tokens[0]["ttft_ms"] == five.ttft_ms and tokens[0]["backend"] == "null"
    assert "ttft_ms" not in tokens[1] and tokens[-1]["tokens"] == 5
    assert sorted(m["pane"] for m in sent if m["type"] == "done") == [0, 1]
    assert sent[-1] == {"type": "end", "run": 1, "similarity": result.similarity}
    assert [a["text"] for a in c.answers] == [five.text, four.text]
    assert (c.running, c.run_id, c.prompt) == (False, 1, "hello")


def test_run_from_the_front_end_returns_at_once(engine: ff.Engine) -> None:
    c = Compare(["slow:1", "five:1"], engine=engine)
    sent = record(c)
    took = click(c, {"type": "run", "prompt": "go", "models": ["slow:1", "four:1"]})
    assert took < 0.5  # 2 s of tokens (40 at 50 ms) stream on threads, not in the handler
    assert c.running and c.models == ["slow:1", "four:1"]  # the message's models, not the trait's
    click(c, {"type": "run", "prompt": "again", "models": ["five:1"]})
    assert c.error == "a run is still streaming; wait() for it"
    until(lambda: any(m["type"] == "token" and m["pane"] == 0 for m in sent))
    assert c.running  # tokens are out while the run goes on
    result = c.wait(30)
    assert result is not None and result.answers[0].tokens == 40
    assert not c.running and c.error == ""


def test_vote_is_recorded(engine: ff.Engine) -> None:
    c = Compare(["five:1", "four:1"], engine=engine)
    record(c)
    click(c, {"type": "vote", "run": 1, "pane": 0})  # nothing ran yet: ignored
    assert c.results is None and c.winner == -1
    result = c.run("x")
    assert result is not None
    click(c, {"type": "vote", "run": result.run, "pane": 1})
    assert (result.winner, c.winner) == ("four:1", 1)
    click(c, {"type": "vote", "run": result.run - 1, "pane": 0})  # an older run: ignored
    assert result.winner == "four:1"
    c.vote("five:1")
    assert (result.winner, c.winner) == ("five:1", 0)
    c.run("y")
    assert c.winner == -1 and c.results is not None and c.results.winner is None


def test_errors_are_one_line(engine: ff.Engine) -> None:
    c = Compare(["broken:1", "missing:1", "five:1"], engine=engine)
    record(c)
    result = c.run("x")
    assert result is not None
    broken, missing, five = result.answers
    assert broken.error == "null model failed after 2 tokens, as configured"
    assert broken.text == "one two "  # what streamed before the failure
    assert missing.error is not None and missing.error.startswith("model 'missing:1' not found")
    assert "\n" not in missing.error and "Traceback" not in missing.error
    assert five.error is None and result.similarity is None  # one answer: nothing to compare
    click(c, {"type": "run", "prompt": "  ", "models": ["five:1"]})
    assert c.error == "type a prompt first"


def test_similarity() -> None:
    assert word_cosine("The cat sat.", "sat the CAT") == pytest.approx(1.0)
    assert word_cosine("a b", "c d") == 0.0
    assert word_cosine("", "a") == 0.0
    assert similarity(["x"]) is None
    assert similarity(["a b", "a b", "c d"]) == pytest.approx(1 / 3)


def test_similarity_by_embeddings(engine: ff.Engine) -> None:
    c = Compare(["five:1", "five:1"], engine=engine, embed_model="five:1")
    record(c)
    result = c.run("x")
    assert result is not None and result.similarity == pytest.approx(1.0)  # same text


def test_chat_streams_keeps_history_and_clears(engine: ff.Engine) -> None:
    chat = Chat("five:1", engine=engine, system="be brief")
    sent = record(chat)
    answer = chat.ask("hi")
    assert answer is not None and answer.text == FIVE + " " and answer.ttft_ms
    assert chat.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": FIVE + " "},
    ]
    assert "".join(m["text"] for m in sent if m["type"] == "token") == FIVE + " "
    assert sent[0]["turn"] == 1 and "ttft_ms" in sent[0]
    assert sent[-1] == {"type": "done", "turn": 1, "done_reason": "stop"}
    assert chat.last["tokens"] == 5 and chat.last["backend"] == "null"
    click(chat, {"type": "send", "text": "again"})
    chat.wait(10)
    assert len(chat.messages) == 4
    click(chat, {"type": "clear"})
    assert chat.messages == [] and chat.last == {} and chat.turn == 3


def test_chat_stop_keeps_the_partial_answer(engine: ff.Engine) -> None:
    chat = Chat("slow:1", engine=engine)
    sent = record(chat)
    took = click(chat, {"type": "send", "text": "talk"})
    assert took < 0.5 and chat.streaming
    until(lambda: sum(m["type"] == "token" for m in sent) >= 3)
    click(chat, {"type": "stop", "turn": chat.turn - 1})  # an older turn: ignored
    click(chat, {"type": "stop", "turn": chat.turn})
    answer = chat.wait(10)
    assert answer is not None and answer.done_reason == "cancel"
    assert 3 <= answer.tokens < 40
    assert chat.messages[-1] == {"role": "assistant", "content": answer.text}
    assert not chat.streaming and chat.last["done_reason"] == "cancel"


def test_chat_clear_while_streaming_drops_the_answer(engine: ff.Engine) -> None:
    chat = Chat("slow:1", engine=engine)
    sent = record(chat)
    chat.ask("talk", wait=False)
    until(lambda: any(m["type"] == "token" for m in sent))
    chat.clear()
    chat.wait(10)
    assert chat.messages == [] and not chat.streaming


def test_chat_errors_are_one_line(engine: ff.Engine) -> None:
    chat = Chat("missing:1", engine=engine)
    record(chat)
    answer = chat.ask("hi")
    assert answer is not None and chat.error == answer.error
    assert chat.error.startswith("model 'missing:1' not found") and "\n" not in chat.error
    assert chat.messages == [{"role": "user", "content": "hi"}]
    click(chat, {"type": "send", "text": ""})
    assert chat.error == "type a message first"


def test_models_table_load_unload_from_clicks(engine: ff.Engine) -> None:
    m = Models(engine=engine)
    record(m)
    assert [r["name"] for r in m.rows] == ["broken:1", "five:1", "four:1", "heavy:1", "slow:1"]
    assert not any(r["loaded"] for r in m.rows)
    took = click(m, {"type": "load", "model": "heavy:1"})
    assert took < 0.5 and m.busy == ["heavy:1"]  # a 1 s load runs on a thread
    until(lambda: not m.busy)
    row = next(r for r in m.rows if r["name"] == "heavy:1")
    assert row["loaded"] and (row["backend"], row["device"], row["memory"]) == (
        "null",
        "cpu",
        3 << 20,
    )
    assert row["expires_at"] == pytest.approx(time.time() + 300, abs=5)
    click(m, {"type": "unload", "model": "heavy:1"})
    until(lambda: not m.busy)
    assert not any(r["loaded"] for r in m.rows) and m.error == ""
    click(m, {"type": "load", "model": "missing:1"})
    until(lambda: m.error != "")
    assert m.error.startswith("model 'missing:1' not found") and "\n" not in m.error


def test_models_pull_shows_progress(engine: ff.Engine, tmp_path: Path) -> None:
    m = Models(engine=engine)
    record(m)
    seen: list[dict[str, Any]] = []
    m.observe(lambda change: seen.append(dict(change["new"])), names="pulls")
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    manifest = m.pull(str(path), name="tiny")
    assert manifest.name == "tiny:latest" and any(r["name"] == "tiny:latest" for r in m.rows)
    assert seen[0] == {str(path): {"status": "starting", "total": None}}
    assert any(p.get(str(path), {}).get("status") == "success" for p in seen)
    assert m.pulls == {}
    click(m, {"type": "pull", "spec": " "})
    assert m.error == "type a model name, file or URL to pull"


def test_models_watch_refreshes_until_closed(engine: ff.Engine) -> None:
    m = Models(engine=engine, interval=0.05)
    record(m)
    click(m, {"type": "watch"})
    engine.load("five:1")  # not through the widget: the poller notices
    until(lambda: any(r["loaded"] for r in m.rows), timeout=5)
    m.close()
    assert m._poller is not None
    m._poller.join(1)
    assert not m._poller.is_alive()


def test_same_rows_ignores_expiry_jitter() -> None:
    row = {"name": "a", "loaded": True, "expires_at": 100.0}
    assert same_rows([row], [row | {"expires_at": 100.4}])
    assert not same_rows([row], [row | {"expires_at": 102.0}])
    assert not same_rows([row], [row | {"expires_at": None}])
    assert table([], [], 0.0) == []


def test_each_widget_ships_an_es_module_and_scoped_css() -> None:
    widgets = ((Compare, ".ff-compare"), (Chat, ".ff-chat"), (Models, ".ff-models"))
    for cls, prefix in (*widgets, (BrowserMold, ".ff-browser")):
        assert "export default { " in str(cls._esm) and "render }" in str(cls._esm)
        selectors = [
            line for line in str(cls._css).splitlines() if line.endswith("{") and "@" not in line
        ]
        assert selectors and all(s.startswith(prefix) for s in selectors)


def test_widgets_use_the_shared_engine_by_default(engine: ff.Engine) -> None:
    from ferrousforge import notebook

    notebook.use(engine)
    try:
        assert Compare(["five:1"]).engine is engine
    finally:
        notebook.use(None)


def test_no_thread_is_left_behind(engine: ff.Engine) -> None:
    before = threading.active_count()
    c = Compare(["five:1", "four:1"], engine=engine)
    record(c)
    c.run("x")
    until(lambda: threading.active_count() <= before)


def page_answer(w: BrowserMold, content: dict[str, Any], rows: Sequence[list[float]] = ()) -> None:
    """Deliver the page's answer as the kernel would, embeddings as one float32 buffer."""
    buffers = [memoryview(array("f", [x for row in rows for x in row]).tobytes())] if rows else []
    w._handle_custom_msg(content, buffers)


WHERE = {
    "model": "minilm:l6-onnx",
    "runtime": "ort",
    "target": "wasm",
    "why": "wasm was asked for",
    "backend": "onnxruntime-web 1.30.0 (wasm)",
    "device": "WASM SIMD, 1 thread(s)",
    "threads": 1,
}


def test_browser_mold_queues_requests_and_resolves_futures() -> None:
    w = BrowserMold("minilm:l6", target="wasm")
    assert (w.model, w.target, w.status, w.last) == ("minilm:l6", "wasm", "", None)
    fut = w.embed(["a cat", "a kitten"])
    gen = w.generate("Hi!", max_tokens=8)
    assert [r["id"] for r in w.requests] == [1, 2] and w.pending() == 2
    assert w.requests[0] == {"id": 1, "kind": "embed", "texts": ["a cat", "a kitten"]}
    assert w.requests[1] | {"prompt": "Hi!", "max_tokens": 8, "temperature": 0.0} == w.requests[1]
    assert not fut.done()

    rows = [[0.5, 0.25, -1.0], [0.125, 0.0, 2.0]]
    answer = {"type": "result", "id": 1, "kind": "embed", "rows": 2, "dims": 3, "ms": 4.5}
    page_answer(w, answer | {"ids": [[101, 1, 102], [101, 2, 102]], "info": WHERE}, rows)
    r = fut.result()
    assert r is w.last and r.embeddings == rows and r.ids[1] == [101, 2, 102]
    assert (r.kind, r.model, r.backend, r.target, r.ms) == (
        "embed", "minilm:l6-onnx", "onnxruntime-web 1.30.0 (wasm)", "wasm", 4.5
    )  # fmt: skip
    assert [x["id"] for x in w.requests] == [2]  # answered requests leave the queue
    page_answer(w, answer | {"info": WHERE}, rows)  # a second page's duplicate: ignored
    assert w.last is r and w.error == ""

    done = {"type": "result", "id": 2, "kind": "generate", "text": "Hello", "tokens": 2}
    page_answer(w, done | {"tokens_per_s": 10.0, "ms": 200.0, "info": WHERE})
    g = gen.result(timeout=0)
    assert (g.text, g.tokens, g.tokens_per_s, g.embeddings) == ("Hello", 2, 10.0, [])
    assert w.requests == [] and w.pending() == 0 and w.last is g


def test_browser_mold_errors_are_one_line() -> None:
    w = BrowserMold("nope:1")
    fut = w.embed("x")
    page_answer(w, {"type": "result", "id": 1, "kind": "embed", "error": "nope:1 is not here"})
    with pytest.raises(BrowserError, match=r"^nope:1 is not here$"):
        fut.result()
    bad = w.embed("y")
    page_answer(w, {"type": "result", "id": 2, "kind": "embed", "rows": 1, "dims": 4})
    assert "floats for 1×4 embeddings" in w.error
    assert "floats for 1×4 embeddings" in str(bad.exception())
    with pytest.raises(ValueError, match="non-empty list of strings"):
        w.embed([])
    with pytest.raises(Exception, match="target"):
        BrowserMold("minilm:l6", target="gpu")


def test_browser_future_refuses_to_hang_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    w = BrowserMold("minilm:l6")
    fut = w.embed("x")
    monkeypatch.setattr(browser_module, "_kernel_would_block", lambda: True)
    with pytest.raises(BrowserPending, match=r"call \.result\(\) in a later cell"):
        fut.result()
    with pytest.raises(TimeoutError):  # BrowserPending is one, for code that catches those
        fut.exception()
    page_answer(w, {"type": "result", "id": 1, "kind": "generate", "text": "ok"})
    assert fut.result().text == "ok"  # answered: nothing to wait for
