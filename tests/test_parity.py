"""``ferrousforge.parity`` and ``forge parity``: a generated ONNX classifier on every backend
that reads it (onnx, custom models that read ONNX files, tvm), against onnx on the cpu, with
rows skipped for what is not installed or does not take tensors; minilm:l6 on jax against
torch (slow tier)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.backends import Backends
from ferrousforge.cli.main import main
from ferrousforge.errors import InvalidTensor, UnsupportedTask
from ferrousforge.mold import Device, LoadOptions, Mold
from ferrousforge.parity import Row, _compare_tensors, example_inputs, passed, run
from ferrousforge.store.manifest import Manifest

from .tensormodels import images, onnxruntime_outputs, write_classifier

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="onnx (to write the test graph) is not installed")


class Faithful(ff.CustomModel):
    """Reads the ONNX file itself, with onnxruntime: the same answers as the onnx backend."""

    formats = ("onnx",)

    def load(self) -> None:
        assert self.manifest is not None
        self.graph = self.manifest.file

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return onnxruntime_outputs(self.graph, inputs)


class Skewed(Faithful):
    """Off by 1e-3: out of tolerance."""

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: v + 1e-3 for k, v in super().infer(inputs).items()}


class Forgetful(Faithful):
    """Gives one output of the two."""

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"logits": super().infer(inputs)["logits"]}


class EmbedsOnly(ff.CustomModel):
    """Reads ONNX files, but only embeds: it does not take tensors."""

    formats = ("onnx",)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] for _ in texts]


class Absent:
    """A backend whose runtime is not installed here."""

    def __init__(self, name: str, formats: set[str]) -> None:
        self.name, self.formats = name, frozenset(formats)

    def available(self) -> bool:
        return False

    def devices(self) -> list[Device]:
        return []

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return 0

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        raise AssertionError("never opened")


def some_backends() -> Backends:
    from ferrousforge.backends.onnx_backend import OnnxBackend

    # onnx; a missing runtime that would read ONNX graphs; one that reads only GGUF files
    return Backends([OnnxBackend(), Absent("absent", {"onnx"}), Absent("ggufonly", {"gguf"})])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ff.Engine]:
    with ff.Engine(ff.Settings(home=tmp_path / "home"), backends=some_backends()) as e:
        for model in (Faithful, Skewed, Forgetful, EmbedsOnly):
            e.register(model)
        e.pull(str(write_classifier(tmp_path / "classifier.onnx")), name="cls")
        yield e


def test_a_tensor_model_on_every_backend_that_reads_it(engine: ff.Engine) -> None:
    rows = {r.backend: r for r in run(engine, "cls", repeats=1)}
    assert set(rows) == {"onnx", "faithful", "skewed", "forgetful", "embedsonly", "absent"}
    for name in ("onnx", "faithful"):  # the reference (onnx on cpu) and a copy of it
        row = rows[name]
        assert row.ok and row.device == "cpu" and row.model == "cls:latest", row
        assert row.max_abs_diff == 0 and row.min_cosine == pytest.approx(1.0)
        assert row.load_ms is not None and row.ms_per_batch is not None
    skewed = rows["skewed"]
    assert not skewed.ok and skewed.error is None and skewed.skipped is None
    assert skewed.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    forgetful = rows["forgetful"]
    assert not forgetful.ok and forgetful.error == "no output 'probabilities'; it gave: logits"
    assert rows["embedsonly"].skipped == "cls:latest does not take tensors (it supports: embed)"
    absent = rows["absent"]
    assert absent.device == "-" and not absent.ok
    assert absent.skipped is not None and "pip install 'ferrousforge[absent]'" in absent.skipped
    # ggufonly reads no form of an ONNX graph: no row; skipped rows are no failures
    assert not passed(rows.values())
    assert passed([rows["onnx"], rows["faithful"], rows["absent"], rows["embedsonly"]])
    assert not passed([rows["absent"]])  # nothing measured is no pass
    assert engine.ps() == []  # parity leaves nothing loaded


def test_named_backends_each_get_a_row(engine: ff.Engine) -> None:
    rows = run(engine, "cls", backends=["onnx", "ggufonly", "nope"], repeats=1)
    by = {r.backend: r for r in rows}
    assert by["onnx"].ok
    assert by["ggufonly"].skipped == "backend ggufonly does not read onnx models"
    assert by["nope"].skipped is not None and by["nope"].skipped.startswith(
        "no nope backend here; installed: absent, embedsonly, faithful"
    )
    assert passed(rows)
    strict = run(engine, "cls", backends=["faithful"], tolerance=-1.0, repeats=1)
    assert [r.ok for r in strict] == [False]  # the check can fail
    only_cpu = run(engine, "cls", devices=["cpu"], repeats=1)
    assert "absent" not in {r.backend for r in only_cpu}  # no device: not asked about


def test_inputs_made_from_the_specs_or_given(engine: ff.Engine) -> None:
    made = example_inputs(engine.show("cls"))
    assert list(made) == ["images"] and made["images"].shape == (2, 3, 8, 8)
    assert str(made["images"].dtype) == "float32"
    mine = {"images": images(5)}
    rows = run(engine, "cls", backends=["onnx", "faithful"], inputs=mine, repeats=1)
    assert [r.ok for r in rows] == [True, True]
    with pytest.raises(InvalidTensor, match="must be FP32"):
        run(engine, "cls", backends=["onnx"], inputs={"images": images(1).astype("float64")})


def test_what_parity_cannot_compare(engine: ff.Engine) -> None:
    from ferrousforge.schema import ModelMetadata

    def add(name: str, kind: Any) -> None:  # a null-backend model of that kind
        meta = ModelMetadata(name=name, model_type=kind)
        engine.store.save(
            Manifest(
                name=name,
                source="test",
                format="null",
                path="/x",
                sha256="0" * 64,
                size=0,
                managed=False,
                metadata=meta,
            )
        )

    add("talker:1", "llm")
    with pytest.raises(UnsupportedTask, match="talker:1 is a text-generation model"):
        run(engine, "talker:1")
    add("blank:1", "other")
    with pytest.raises(InvalidTensor, match="blank:1 declares no input specs: pass the inputs"):
        run(engine, "blank:1")


def test_tensor_comparison() -> None:
    import numpy as np

    nan = float("nan")
    same = {"a": np.array([[1.0, nan], [3.0, 4.0]]), "b": np.array([b"x", b"y"], dtype=object)}
    assert _compare_tensors(same, same) == (0.0, 1.0, 4.0)
    off = {"a": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": same["b"]}
    assert _compare_tensors(same, off)[0] == math.inf  # NaN where there was none: never ok
    text = {"a": same["a"], "b": np.array([b"x", b"z"], dtype=object)}
    assert _compare_tensors(same, text)[:2] == (math.inf, 0.0)
    with pytest.raises(InvalidTensor, match=r"output 'a' has shape \[4\], not \[2, 2\]"):
        _compare_tensors(same, {"a": np.zeros(4), "b": same["b"]})
    big = {"logits": np.array([[100.0, -50.0]])}  # the tolerance scales with the magnitude
    assert _compare_tensors(big, {"logits": big["logits"] + 1e-4})[2] == 100.0


def test_forge_parity_on_a_tensor_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    monkeypatch.setattr(Backends, "discover", classmethod(lambda cls: some_backends()))
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    graph = write_classifier(tmp_path / "classifier.onnx")
    assert main(["pull", str(graph), "--name", "cls"]) == 0
    capsys.readouterr()
    assert main(["parity", "cls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["BACKEND", "DEVICE", "MODEL"] and lines[0].endswith("RESULT")
    assert any(line.split()[:3] == ["onnx", "cpu", "cls:latest"] for line in lines)
    assert next(line for line in lines if line.startswith("onnx ")).endswith(" ok")
    absent = next(line for line in lines if line.startswith("absent "))
    assert absent.split()[1] == "-" and "skipped: absent is not installed" in absent
    assert main(["parity", "cls", "--tolerance", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().out
    np.savez(tmp_path / "inputs.npz", images=images(4))
    assert main(["parity", "cls", "--inputs", str(tmp_path / "inputs.npz"), "--json"]) == 0
    rows = [Row(**r) for r in json.loads(capsys.readouterr().out)]
    assert {r.backend: r.skipped is None for r in rows} == {"onnx": True, "absent": False}
    assert main(["parity", "cls", "--inputs", str(tmp_path / "missing.npz")]) == 1
    assert "Error: cannot read inputs from" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_and_tvm_agree_on_an_onnx_graph(tmp_path: Path) -> None:
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    from ferrousforge.backends.onnx_backend import OnnxBackend
    from ferrousforge.backends.tvm_backend import TvmBackend

    graph = write_classifier(tmp_path / "classifier.onnx")
    backends = Backends([OnnxBackend(), TvmBackend()])
    with ff.Engine(ff.Settings(home=tmp_path / "home", threads=2), backends=backends) as e:
        e.pull(str(graph), name="cls")
        rows = {(r.backend, r.device): r for r in run(e, "cls", repeats=1)}
        assert rows[("tvm", "cpu")].ok and rows[("onnx", "cpu")].ok, rows
        assert rows[("tvm", "cpu")].max_abs_diff is not None
        assert e.ps() == []


@pytest.mark.slow
def test_minilm_on_jax_against_torch(minilm_engine: ff.Engine) -> None:
    pytest.importorskip("jax", reason="the jax extra is not installed")
    named = ["torch", "jax", "tensorflow"]
    rows = {r.backend: r for r in run(minilm_engine, "minilm:l6", backends=named, repeats=1)}
    jax = rows["jax"]
    assert jax.ok and jax.model == "minilm:l6" and jax.device == "cpu", jax
    assert jax.min_cosine is not None and jax.min_cosine >= 0.9999
    assert rows["torch"].ok and rows["torch"].max_abs_diff == 0
    # TensorFlow reads SavedModels and .keras files, installed or not: skipped, with why
    assert rows["tensorflow"].skipped == "backend tensorflow does not read safetensors models"
    assert passed(rows.values()) and minilm_engine.ps() == []
    env = os.environ | {"FORGE_HOME": str(minilm_engine.settings.home), "FORGE_THREADS": "2"}
    cmd = [sys.executable, "-m", "ferrousforge", "parity", "minilm:l6", "--backends"]
    r = subprocess.run(
        [*cmd, "jax,tensorflow"], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.split()[:2] == ["jax", "cpu"] and line.endswith(" ok") for line in lines)
    assert any("skipped: backend tensorflow does not read" in line for line in lines)
