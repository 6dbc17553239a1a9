"""The widgets in a real JupyterLab on 127.0.0.1, driven by Playwright on Debian's Chromium.

One ``jupyter lab`` (token, random port, a temporary home holding the tiny GGUF and
smollm2:135m) serves three notebooks; each test opens one, runs its first cell, clicks,
reads the DOM, then runs a follow-up cell to show what Python received.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferrousforge.store.store import Store

from .labharness import CHROMIUM, Lab, Notebook, running_lab, write_notebook
from .tinymodel import write_tiny_gguf

pytestmark = pytest.mark.slow
SMOLLM2 = "smollm2:135m"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    pytest.importorskip("anywidget")
    if importlib.util.find_spec("llama_cpp") is None:  # the kernels load it, not this process
        pytest.skip("llama-cpp-python is not installed")
    pytest.importorskip("playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    test_home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    source = Store(test_home.expanduser())
    if not source.exists(SMOLLM2):
        pytest.skip(f"{SMOLLM2} is not in {test_home}; ./dev.sh test pulls it first")

    root = tmp_path_factory.mktemp("lab")
    store = Store(root / "home")
    store.save(source.get(SMOLLM2))  # the same blob, by its absolute path
    store.pull(str(write_tiny_gguf(root / "tiny.gguf")), name="tiny")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    # under Jupyter's root: the only folder the extension's engine pulls files from
    tiny2 = write_tiny_gguf(notebooks / "tiny2.gguf", seed=1)
    _write_notebooks(notebooks)

    with running_lab(root, store.home, notebooks, tiny2) as lab:
        yield lab


def _write_notebooks(root: Path) -> None:
    for name in ("compare.ipynb", "compare-nb7.ipynb"):  # one each for Lab and Notebook 7
        write_notebook(
            root / name,
            "from ferrousforge.widgets import Compare\n"
            f'c = Compare(["tiny", "{SMOLLM2}"], options={{"num_predict": 48, "temperature": 0}})\n'
            "c",
            "r = c.results\n"
            'print("answers", [(a.model, a.tokens, a.error) for a in r.answers])\n'
            'print("ttft", all(a.ttft_ms > 0 for a in r.answers))\n'
            'print("winner", r.winner)',
        )
    write_notebook(
        root / "models.ipynb",
        "from ferrousforge.widgets import Models\nm = Models()\nm",
        'print("loaded", [x.name for x in m.engine.ps()])\n'
        'print("stored", sorted(x.name for x in m.engine.list()))',
    )
    write_notebook(
        root / "chat.ipynb",
        "from ferrousforge.widgets import Chat\n"
        f'chat = Chat("{SMOLLM2}", options={{"num_predict": 400, "temperature": 0}})\n'
        "chat",
        'print("answer", chat.answer.done_reason, chat.answer.tokens, len(chat.messages))',
        'print("messages", len(chat.messages))',
    )


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def notebook(request: pytest.FixtureRequest, browser: Any, lab: Lab) -> Iterator[Notebook]:
    nb = Notebook(browser, lab, request.param)
    yield nb
    # shown only when the test fails: the widgets as the browser last drew them
    widgets = nb.page.evaluate(
        """() => [...document.querySelectorAll(".ff-compare, .ff-models, .ff-chat")]
            .map((e) => e.outerHTML).join("\\n")"""
    )
    sys.stdout.write(f"widgets in {nb.name}:\n{widgets}\n")
    nb.close()


def _field(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


@pytest.mark.parametrize("notebook", ["compare.ipynb", "compare-nb7.ipynb"], indirect=True)
def test_compare_streams_both_models_and_records_the_vote(notebook: Notebook) -> None:
    page = notebook.page
    nb7 = notebook.name.endswith("-nb7.ipynb")
    assert notebook.app == ("Jupyter Notebook" if nb7 else "JupyterLab")
    notebook.run(0)
    page.locator(".ff-compare").wait_for()
    # count text appends per pane: streaming means many, not one at the end
    page.evaluate(
        """() => {
            window.ffAppends = [0, 0];
            document.querySelectorAll(".ff-compare-pane").forEach((pane, i) => {
                new MutationObserver((records) => (window.ffAppends[i] += records.length))
                    .observe(pane.querySelector(".ff-compare-text"),
                             { characterData: true, subtree: true });
            });
        }"""
    )
    page.fill(".ff-compare-prompt", "Name three colors.")
    page.click(".ff-compare-run")
    page.locator(".ff-compare[data-state=done]").wait_for()
    appends = page.evaluate("window.ffAppends")
    assert all(n >= 5 for n in appends), appends
    for i in (0, 1):
        pane = f".ff-compare-pane[data-pane='{i}']"
        assert _field(page, f"{pane} .ff-compare-text")
        for key in ("ttft", "tps", "tokens", "memory"):
            assert re.match(r"[\d.]+ ", _field(page, f"{pane} [data-field={key}]") + " "), key
        assert _field(page, f"{pane} [data-field=where]") == "llama_cpp · cpu"
        assert float(page.get_attribute(pane, "data-first-token-ms") or 0) > 0
    root = page.locator(".ff-compare")
    run_ms = float(root.get_attribute("data-run-ms") or 0)
    assert float(root.get_attribute("data-first-token-ms") or 0) > run_ms > 0
    assert re.fullmatch(r"similarity \d\.\d\d", _field(page, ".ff-compare-status"))

    page.click(".ff-compare-pane[data-pane='1'] .ff-compare-vote")
    page.locator(".ff-compare[data-winner='1'] .ff-compare-pane.ff-compare-winner").wait_for()
    m = notebook.output(1, r"answers (.*)\nttft (\w+)\nwinner (\S+)")
    assert m.group(2) == "True" and m.group(3) == SMOLLM2
    assert re.fullmatch(r"\[\('tiny', \d+, None\), \('smollm2:135m', \d+, None\)\]", m.group(1))


def unload_everything(lab: Lab) -> None:
    """With the server extension on, the kernels share the server's engine: start clean."""

    headers = {"Authorization": f"token {lab.token}"}
    loaded = httpx.get(f"{lab.url}/forge/api/ps", headers=headers, timeout=60)
    if loaded.status_code == 404:  # no extension: each kernel has an engine of its own
        return
    for m in loaded.json()["models"]:
        body = {"model": m["name"], "keep_alive": 0}
        httpx.post(f"{lab.url}/forge/api/generate", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("notebook", ["models.ipynb"], indirect=True)
def test_models_load_unload_and_pull_by_clicks(notebook: Notebook, lab: Lab) -> None:
    unload_everything(lab)
    page = notebook.page
    notebook.run(0)
    tiny = page.locator("tr[data-model='tiny:latest']")
    # loaded or not: with the server extension, an earlier test's kernel shares this engine
    page.locator(f"tr[data-model='{SMOLLM2}']").wait_for()
    tiny.locator("button[data-action=load]").click()
    page.locator("tr[data-model='tiny:latest'][data-loaded=true]").wait_for()
    assert _field(page, "tr[data-model='tiny:latest'] [data-field=where]") == "llama_cpp · cpu"
    assert _field(page, "tr[data-model='tiny:latest'] [data-field=memory]").endswith("MiB")
    keep = page.locator("tr[data-model='tiny:latest'] [data-field=keep-alive]")
    first = keep.inner_text()
    assert re.fullmatch(r"[45]:\d\d", first)  # the default keep_alive, 5 minutes
    page.wait_for_function(
        """(first) => document.querySelector(
            "tr[data-model='tiny:latest'] [data-field=keep-alive]").textContent !== first""",
        arg=first,
        timeout=5000,
    )  # it counts down
    assert int(page.get_attribute(".ff-models-total", "data-memory") or 0) > 0

    tiny.locator("button[data-action=unload]").click()
    page.locator("tr[data-model='tiny:latest'][data-loaded=false]").wait_for()
    page.fill(".ff-models-spec", str(lab.tiny2))
    page.click(".ff-models-pull-button")
    page.locator("tr[data-model='tiny2:latest']").wait_for()
    m = notebook.output(1, r"loaded (.*)\nstored (.*)")
    assert "tiny:latest" not in m.group(1)
    assert m.group(2) == "['smollm2:135m', 'tiny2:latest', 'tiny:latest']"


@pytest.mark.parametrize("notebook", ["chat.ipynb"], indirect=True)
def test_chat_streams_stops_and_clears(notebook: Notebook) -> None:
    page = notebook.page
    notebook.run(0)
    page.locator(".ff-chat").wait_for()
    page.fill(".ff-chat-input", "Write a long story about a dragon.")
    page.click(".ff-chat-send")
    page.locator(".ff-chat-msg[data-role=user]").wait_for()
    page.wait_for_function(
        """() => (document.querySelector(".ff-chat-pending")?.textContent ?? "").length > 60"""
    )
    assert float(page.get_attribute(".ff-chat", "data-first-token-ms") or 0) > float(
        page.get_attribute(".ff-chat", "data-sent-ms") or 0
    )
    page.click(".ff-chat-stop")
    page.locator(".ff-chat[data-state=idle][data-done-reason=cancel]").wait_for()
    reply = _field(page, ".ff-chat-msg[data-role=assistant] .ff-chat-content")
    assert reply.startswith("Once upon a time"), reply  # greedy: temperature 0
    assert _field(page, ".ff-chat [data-field=ttft]").endswith("ms")
    m = notebook.output(1, r"answer (\w+) (\d+) (\d+)")
    assert m.group(1) == "cancel" and 10 < int(m.group(2)) < 400 and m.group(3) == "2"

    page.click(".ff-chat-clear")
    page.wait_for_function("""() => !document.querySelector(".ff-chat-msg")""")
    assert notebook.output(2, r"messages (\d+)").group(1) == "0"
