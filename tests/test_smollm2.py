"""The slow tier: smollm2:135m, a real chat model, through the CLI and the engine.

``./dev.sh test`` pulls it once into FORGE_TEST_HOME (~/.cache/ferrousforge/test-home)
before pytest runs, so these tests themselves touch no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ferrousforge as ff

from .threads import generate_in_threads

pytestmark = pytest.mark.slow
MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def home() -> Path:
    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/smollm2/135m.json").is_file():
        pytest.skip(f"{MODEL} is not in {home}; ./dev.sh test pulls it first")
    return home


@pytest.fixture(scope="module")
def engine(home: Path):
    with ff.Engine(ff.Settings(home=home, num_ctx=2048)) as engine:
        yield engine


def test_forge_run_answers_paris(home: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferrousforge",
            "run",
            MODEL,
            "What is the capital of France? Answer in one word.",
        ],
        env=os.environ | {"FORGE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_streams_through_the_chatml_template(engine: ff.Engine) -> None:
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    chunks = list(engine.chat(MODEL, msgs, stream=True, options={"temperature": 0}))
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    assert len(chunks) > 3 and chunks[-1].done and chunks[-1].done_reason == "stop"
    stats = chunks[-1].stats
    assert stats is not None and stats.eval_count >= len(chunks) - 1
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_eight_threads_on_smollm2(engine: ff.Engine) -> None:
    prompts = [f"Count from {i} to {i + 5}:" for i in range(8)]
    opts = {"temperature": 0, "max_tokens": 16}
    expected = {p: engine.generate(MODEL, p, raw=True, options=opts).text for p in prompts}
    assert generate_in_threads(engine, MODEL, prompts, opts) == expected
    assert all(expected.values())
