"""The Pyodide side (wasm/) without a browser: its pure-Python safetensors reader against the
numpy one, and the built wheel carrying the server's WGSL kernels and BERT dispatch plan byte
for byte."""

from __future__ import annotations

import importlib
import json
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferrousforge.backends import safetensors_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``forge_wasm.safetensors``, imported from wasm/ (it needs no ``js``)."""
    monkeypatch.syspath_prepend(str(ROOT / "wasm"))
    return importlib.import_module("forge_wasm.safetensors")


def write(path: Path, tensors: dict[str, Any]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        shape = list(array.shape)
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path.read_bytes()


def test_safetensors_reader_matches_the_numpy_one(reader: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    half = rng.standard_normal(5).astype(np.float16)
    bf16 = (w.view(np.uint32) >> 16).astype("<u2")  # w's top halves
    path = tmp_path / "t.safetensors"
    data = write(
        path,
        {
            "w": ("F32", w),
            "half": ("F16", half),
            "bf16": ("BF16", bf16),
            "position_ids": ("I64", np.arange(6, dtype=np.int64).reshape(1, 6)),
            "empty": ("F32", np.zeros((0, 4), np.float32)),
        },
    )
    want = safetensors_file.load(path)
    got = reader.load(data)
    assert sorted(got) == ["bf16", "empty", "half", "w"]  # floats only: what becomes weights
    for name, (shape, raw) in got.items():
        array = np.frombuffer(raw, "<f4").reshape(shape)
        np.testing.assert_array_equal(array, np.asarray(want[name], np.float32), name)
    tensors = reader.header(lambda b, e: data[b:e], len(data))
    assert tensors["position_ids"].dtype == "I64" and tensors["position_ids"].shape == (1, 6)
    assert data[tensors["w"].begin : tensors["w"].end] == w.tobytes()


def test_corrupt_safetensors_raise_model_error(reader: Any, tmp_path: Path) -> None:
    errors = importlib.import_module("forge_wasm.errors")
    raw = write(tmp_path / "good.safetensors", {"a": ("F32", np.ones((4, 4), np.float32))})
    cases = {
        b"": "too short",
        raw[:-10]: "lies past the end",
        (10**12).to_bytes(8, "little") + raw[8:]: "bad header length",
        raw[:8] + b"{" * (len(raw) - 8): "corrupt header",
        raw.replace(b'"F32"', b'"F64"'): "is F64; readable: F32, F16, BF16, I64, I32",
        raw.replace(b"[4, 4]", b"[4, 5]"): "lies past the end or is cut",
    }
    for data, message in cases.items():
        with pytest.raises(errors.ModelError, match=message):
            reader.load(data)


def test_the_wheel_carries_the_servers_kernels_and_plan() -> None:
    version = tomllib.loads((ROOT / "wasm/pyproject.toml").read_text())["project"]["version"]
    name = f"ferrousforge_wasm-{version}-py3-none-any.whl"
    assert name in (ROOT / "web/runtimes/pyodide.js").read_text(), "pyodide.js names another wheel"
    wheel = ROOT / "web/vendor/wheels" / name
    if not wheel.is_file():
        pytest.skip(f"{wheel} is not built: npm run build")
    # each file of the wheel's that is copied from the server's package -> its source there
    sources = {f"forge_wasm/wgsl/{p.name}": p for p in (ROOT / "kernel/wgsl").glob("*.wgsl")}
    assert len(sources) == 6
    sources["forge_wasm/bert_plan.py"] = ROOT / "kernel/backends/bert_plan.py"
    with zipfile.ZipFile(wheel) as z:
        carried = {n: z.read(n) for n in z.namelist()}
    kernels = {n for n in carried if n.startswith("forge_wasm/wgsl/")}
    assert kernels <= sources.keys(), f"{wheel.name} has kernels the server has not"
    stale = [n for n, path in sources.items() if carried.get(n) != path.read_bytes()]
    assert not stale, f"{wheel.name} has older or lacks {stale}: npm run build"
