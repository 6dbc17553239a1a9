"""One model name on every backend (``forms.readable_form``): a backend gets the model itself
or a stored form of it, else one converted now and kept; when no conversion can make one, or
it needs an extra that is missing, one line says what to run or install. ``forge embed
--backend`` goes through it (the CLI tests run ``forge`` as a subprocess)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ferrousforge import convert
from ferrousforge.backends import Backends
from ferrousforge.errors import MissingExtra, UnsupportedFormat
from ferrousforge.forms import family, readable_form
from ferrousforge.progress import Progress
from ferrousforge.store.manifest import FileEntry, Manifest
from ferrousforge.store.store import Store

from .webharness import fresh_home

TOKENIZER = {"tokenizer.json": b"{}", "config.json": b"{}"}
NO_TORCH = "import sys; sys.modules['torch'] = None; from ferrousforge.cli.main import main; "
NO_TORCH += "sys.exit(main(sys.argv[1:]))"


def add(home: Path, name: str, fmt: str, parent: str | None = None) -> Manifest:
    """A stored model of fake bytes in ``fmt`` (a folder), derived from ``parent``."""
    folder = home / "src" / name.replace(":", "_")
    folder.mkdir(parents=True)
    main = {"gguf": "model.gguf", "onnx": "model.onnx", "tvm": "model.onnx"}
    files = {main.get(fmt, "model.safetensors"): b"weights", **TOKENIZER}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    manifest = Manifest(
        name=name,
        source="test",
        format=fmt,
        path=str(folder / "model.gguf" if fmt == "gguf" else folder),
        managed=False,
        sha256="cd" * 32,
        size=sum(len(d) for d in files.values()),
        files=[FileEntry(path=r, sha256="0" * 64, size=len(d)) for r, d in files.items()],
        parent=parent,
    )
    Store(home).save(manifest)
    return manifest


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "home")


@pytest.fixture
def no_conversion(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails the test on any conversion; lists what was asked."""
    asked: list[str] = []

    def refuse(store: Store, model: str, to: str, *a: Any, **kw: Any) -> Manifest:
        asked.append(f"{model} -> {to}")
        raise AssertionError(f"converted {model} to {to}")

    monkeypatch.setattr(convert, "convert", refuse)
    return asked


def form(store: Store, model: str, backend: str) -> str:
    return readable_form(store, Backends.discover(), store.get(model), backend).name


def test_the_model_itself_or_a_stored_form_is_used(store: Store, no_conversion: list[str]) -> None:
    add(store.home, "enc:st", "safetensors")
    add(store.home, "enc:st-onnx", "onnx", parent="enc:st")
    add(store.home, "enc:st-tvm", "tvm", parent="enc:st")
    add(store.home, "enc:st-onnx-tvm", "tvm", parent="enc:st-onnx")
    assert [m.name for m in family(store, store.get("enc:st-onnx-tvm"))] == [
        "enc:st",
        "enc:st-onnx",
        "enc:st-tvm",
        "enc:st-onnx-tvm",
    ]
    assert form(store, "enc:st", "torch") == "enc:st"  # it reads the model as stored
    assert form(store, "enc:st", "onnx") == "enc:st-onnx"  # a form of it
    assert form(store, "enc:st", "tvm") == "enc:st"  # tvm reads safetensors too
    assert form(store, "enc:st-onnx", "tvm") == "enc:st-onnx"
    assert form(store, "enc:st-onnx", "wgpu") == "enc:st"  # back to the source
    assert form(store, "enc:st-onnx-tvm", "torch") == "enc:st"
    assert form(store, "enc:st-tvm", "onnx") == "enc:st-onnx"  # a sibling
    assert no_conversion == []


def test_the_backends_own_format_comes_first(store: Store, no_conversion: list[str]) -> None:
    add(store.home, "chat:q4", "gguf")
    add(store.home, "chat:q4-onnx", "onnx", parent="chat:q4")
    add(store.home, "chat:q4-tvm", "tvm", parent="chat:q4")
    assert form(store, "chat:q4", "tvm") == "chat:q4-tvm"  # not the onnx one, listed first
    assert form(store, "chat:q4", "onnx") == "chat:q4-onnx"
    assert no_conversion == []


def test_no_possible_conversion_is_one_line_naming_what_to_run(store: Store) -> None:
    add(store.home, "chat:q4", "gguf")
    add(store.home, "enc:onnx", "onnx")
    with pytest.raises(UnsupportedFormat) as gguf:
        form(store, "chat:q4", "tvm")
    assert str(gguf.value) == (
        "backend tvm does not read gguf models (it reads: onnx, safetensors, tvm) and no "
        "conversion makes one from chat:q4: pull a form in one of those formats with "
        "`forge pull`, or run it with --backend llama_cpp"
    )
    with pytest.raises(UnsupportedFormat, match=r"run it with --backend onnx$") as onnx:
        form(store, "enc:onnx", "torch")  # nothing converts to safetensors
    assert "\n" not in str(onnx.value)
    assert [m.name for m in store.list()] == ["chat:q4", "enc:onnx"]  # nothing made


def test_a_missing_extra_is_one_line_naming_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(store.home, "enc:st", "safetensors")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as when absent
    seen: list[str] = []
    with pytest.raises(MissingExtra) as missing:
        readable_form(
            store, Backends.discover(), store.get("enc:st"), "onnx", lambda p: seen.append(p.status)
        )
    assert str(missing.value) == (
        "torch (to convert enc:st to onnx for the onnx backend) is not installed; "
        "install it with: pip install 'ferrousforge[torch]'"
    )
    assert "converting enc:st to onnx for the onnx backend" in seen
    assert store.derived("enc:st") == []
    assert list(store.partial.iterdir()) == []  # the conversion's staging folder is gone


@pytest.mark.slow
def test_a_conversion_is_made_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two loads at once on a fresh store: one ONNX export, which both get, and which stays."""
    store = Store(fresh_home(tmp_path / "home", "minilm:l6"))
    real, calls = convert.convert, []

    def counted(*a: Any, **kw: Any) -> Manifest:
        calls.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(convert, "convert", counted)
    backends, source = Backends.discover(), store.get("minilm:l6")
    got: list[str] = []
    seen: list[Progress] = []

    def load() -> None:
        got.append(readable_form(store, backends, source, "onnx", seen.append).name)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == ["minilm:l6-onnx", "minilm:l6-onnx"]
    assert calls == ["minilm:l6"]  # the second waited for the first and found its entry
    made = store.get("minilm:l6-onnx")
    assert (made.format, made.parent, made.source) == ("onnx", "minilm:l6", "convert:minilm:l6")
    assert (made.file / "model.onnx").stat().st_size > 20 << 20
    assert any(p.status.startswith("converting minilm:l6 to onnx") for p in seen)
    assert readable_form(store, backends, source, "onnx").name == "minilm:l6-onnx"
    assert calls == ["minilm:l6"]  # kept: the next load converts nothing


def forge(home: Path, *args: str, python: tuple[str, ...] = ("-m", "ferrousforge")) -> Any:
    env = os.environ | {"FORGE_HOME": str(home), "FORGE_THREADS": "1"}
    cmd = [sys.executable, *python, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.slow
def test_forge_embed_on_another_backend_converts_and_keeps_the_form(tmp_path: Path) -> None:
    home = fresh_home(tmp_path / "home", "minilm:l6")
    texts = ["a cat sits on the mat", "the stock market fell"]
    onnx = forge(home, "embed", "minilm:l6", *texts, "--backend", "onnx", "--json")
    assert onnx.returncode == 0, onnx.stderr
    assert "converting minilm:l6 to onnx for the onnx backend" in onnx.stderr
    got = json.loads(onnx.stdout)
    made = Store(home).get("minilm:l6-onnx")
    assert (made.format, made.parent) == ("onnx", "minilm:l6")
    torch = json.loads(forge(home, "embed", "minilm:l6", *texts, "--json").stdout)
    for a, b in zip(torch["embeddings"], got["embeddings"], strict=True):
        assert len(b) == 384 and cosine(a, b) > 0.9999
    # the same vectors, but not bit for bit: onnxruntime computed these, not torch
    assert torch["embeddings"] != got["embeddings"]
    again = forge(home, "embed", "minilm:l6", texts[0], "--backend", "onnx", "--json")
    assert again.returncode == 0 and "converting" not in again.stderr, again.stderr
    assert Store(home).get("minilm:l6-onnx").created_at == made.created_at


def test_forge_embed_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    home = tmp_path / "home"
    add(home, "enc:st", "safetensors")
    r = forge(home, "embed", "enc:st", "hi", "--backend", "onnx", python=("-c", NO_TORCH))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: torch (to convert enc:st to onnx for the onnx backend) is not installed; "
        "install it with: pip install 'ferrousforge[torch]'"
    ), r.stderr
    assert Store(home).derived("enc:st") == []
