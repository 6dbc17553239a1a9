"""Backend and device choice (seed §2.4) against fake backends that report GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferrousforge.backends import Backends
from ferrousforge.backends.null import NullBackend
from ferrousforge.devices import choose, cpu_device
from ferrousforge.errors import DeviceUnavailable, MissingExtra, UnsupportedFormat, UnsupportedTask
from ferrousforge.mold import Device, LoadOptions, Mold
from ferrousforge.schema import ModelMetadata, ModelRequirements
from ferrousforge.store.manifest import Manifest

GB = 1 << 30


class FakeBackend:
    """Implements the Backend protocol with a configurable set of devices."""

    def __init__(self, name: str, formats: set[str], devices: list[Device], ok: bool = True):
        self.name, self.formats, self._devices, self._ok = name, frozenset(formats), devices, ok

    def available(self) -> bool:
        return self._ok

    def devices(self) -> list[Device]:
        return self._devices

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return manifest.size

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        return NullBackend().open(manifest, device, opts)


def manifest(
    fmt: str = "gguf", gpu_required: bool = False, size: int = GB, min_vram: int | None = None
) -> Manifest:
    req = ModelRequirements(gpu_required=gpu_required, min_vram=min_vram)
    meta = ModelMetadata(requirements=req)
    return Manifest(
        name="m:1", source="t", format=fmt, path="/x", sha256="0" * 64, size=size, metadata=meta
    )


CPU = cpu_device("fake")
CUDA0 = Device("cuda:0", "Fake GPU", 8 * GB, 6 * GB, ("fake",))
SMALL = Device("cuda:1", "Small GPU", 1 * GB, GB // 2, ("fake",))


def test_gpu_with_room_beats_cpu() -> None:
    b = Backends([FakeBackend("fake", {"gguf"}, [CPU, SMALL, CUDA0])])
    assert choose(manifest(size=2 * GB), b, LoadOptions())[1].id == "cuda:0"
    assert choose(manifest(size=7 * GB), b, LoadOptions())[1].id == "cpu"
    assert choose(manifest(size=GB // 4), b, LoadOptions())[1].id == "cuda:1"
    assert choose(manifest(size=GB // 4, min_vram=GB), b, LoadOptions())[1].id == "cuda:0"


def test_explicit_device_wins_or_fails_listing_what_is_there() -> None:
    b = Backends([FakeBackend("fake", {"gguf"}, [CPU, CUDA0])])
    assert choose(manifest(), b, LoadOptions(device="CPU"))[1].id == "cpu"
    assert choose(manifest(), b, LoadOptions(device="cuda"))[1].id == "cuda:0"
    with pytest.raises(DeviceUnavailable, match=r"'metal:0'.*available: cpu, cuda:0"):
        choose(manifest(), b, LoadOptions(device="metal"))


def test_gpu_required_without_gpu_is_an_error() -> None:
    b = Backends([FakeBackend("fake", {"gguf"}, [CPU])])
    with pytest.raises(DeviceUnavailable, match="requires a GPU"):
        choose(manifest(gpu_required=True), b, LoadOptions())
    b = Backends([FakeBackend("fake", {"gguf"}, [CPU, SMALL])])
    assert choose(manifest(gpu_required=True, size=4 * GB), b, LoadOptions())[1].id == "cuda:1"


def test_format_picks_the_first_available_backend() -> None:
    missing = FakeBackend("absent", {"onnx"}, [CPU], ok=False)
    b = Backends([missing, FakeBackend("a", {"gguf"}, [CPU]), FakeBackend("b", {"gguf"}, [CPU])])
    assert choose(manifest(), b, LoadOptions())[0].name == "a"
    assert choose(manifest(), b, LoadOptions(backend="b"))[0].name == "b"
    with pytest.raises(MissingExtra, match=r"pip install 'ferrousforge\[absent\]'"):
        choose(manifest("onnx"), b, LoadOptions())
    with pytest.raises(UnsupportedFormat, match="known formats"):
        choose(manifest("tflite"), b, LoadOptions())
    with pytest.raises(UnsupportedFormat, match="backend a does not read onnx"):
        choose(manifest("onnx"), b, LoadOptions(backend="a"))
    with pytest.raises(MissingExtra, match="absent"):
        choose(manifest("onnx"), b, LoadOptions(backend="absent"))


def test_devices_merge_across_backends() -> None:
    b = Backends(
        [
            FakeBackend("x", {"gguf"}, [CPU, CUDA0]),
            FakeBackend("y", {"onnx"}, [cpu_device("y"), CUDA0]),
        ]
    )
    merged = {d.id: d.backends for d in b.devices()}
    assert merged == {"cpu": ("fake", "y"), "cuda:0": ("fake",)}


@pytest.mark.parametrize(
    ("backend", "module", "fmt"), [("tvm", "tvm", "tvm"), ("wgpu", "wgpu", "safetensors")]
)
def test_real_backends_name_their_extra_when_missing(
    monkeypatch: pytest.MonkeyPatch, backend: str, module: str, fmt: str
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    found = Backends.discover()
    assert backend in found.names()
    with pytest.raises(MissingExtra, match=rf"pip install 'ferrousforge\[{backend}\]'"):
        choose(manifest(fmt), found, LoadOptions(backend=backend))


def test_torch_refuses_decoders_at_its_generation_seam(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from ferrousforge.backends.torch_backend import TorchBackend
    from ferrousforge.store.formats import is_decoder

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    m = manifest("safetensors").model_copy(update={"path": str(tmp_path), "name": "dec:1"})
    assert is_decoder(tmp_path)
    with pytest.raises(UnsupportedTask, match="dec:1 is a text-generation model"):
        TorchBackend().open(m, cpu_device("torch"), LoadOptions())
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert not is_decoder(tmp_path)


@pytest.mark.parametrize(
    ("available", "cuda", "providers"),
    [
        (["CPUExecutionProvider"], None, ["CPUExecutionProvider"]),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider",
         ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
         "TensorrtExecutionProvider + CUDAExecutionProvider",
         ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
    ],
)  # fmt: skip
def test_tensorrt_comes_first_on_cuda_when_onnxruntime_has_it(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    available: list[str],
    cuda: str | None,
    providers: list[str],
) -> None:
    """The lent GPU machine has no TensorRT build of onnxruntime: its providers are faked."""
    ort = pytest.importorskip("onnxruntime")
    from ferrousforge.backends.onnx_backend import OnnxBackend, provider_options, providers_for

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    backend = OnnxBackend()
    names = {d.id: d.name for d in backend.devices()}
    assert names.get("cuda:0") == cuda
    chosen = providers_for("cuda:0", available)
    assert chosen == providers
    options = provider_options(chosen, tmp_path)
    if "TensorrtExecutionProvider" in available:
        trt = options[0][1]
        assert trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"].startswith(
            str(tmp_path)
        )  # engines take minutes to build: they are kept in the store's cache
        assert backend.accelerators() == {"tensorrt": None}
    else:
        assert options == chosen
        assert "no TensorrtExecutionProvider" in str(backend.accelerators()["tensorrt"])


def test_forge_devices_names_the_backends_of_each_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ferrousforge.cli.main import main

    class WithAccelerator(FakeBackend):
        def accelerators(self) -> dict[str, str | None]:
            return {"tensorrt": "no TensorRT here", "coreml": None}

    def gpu(backend: str) -> Device:
        return Device("cuda:0", "Fake GPU with a long name", 8 * GB, 6 * GB, (backend,))

    found = Backends(
        [
            FakeBackend("a", {"gguf"}, [cpu_device("a"), gpu("a")]),
            WithAccelerator("b", {"onnx"}, [cpu_device("b"), gpu("b")]),
            FakeBackend("c", {"safetensors"}, [cpu_device("c")]),
            FakeBackend("gone", {"onnx"}, [], ok=False),
        ]
    )
    monkeypatch.setattr(Backends, "discover", classmethod(lambda cls: found))
    monkeypatch.setenv("FORGE_HOME", str(tmp_path))
    assert main(["devices"]) == 0
    head, cpu, cuda, *notes = capsys.readouterr().out.splitlines()
    assert head.split() == ["DEVICE", "BACKENDS", "MEMORY", "FREE", "NAME"]
    assert cpu.startswith("cpu ") and "   a, b, c   " in cpu
    assert cuda.startswith("cuda:0 ") and "   a, b   " in cuda
    assert cuda.split()[-10:] == "8.6 GB 6.4 GB Fake GPU with a long name".split()  # name last
    assert cpu.index("a, b, c") == cuda.index("a, b") == head.index("BACKENDS")  # aligned
    assert notes == [
        "tensorrt (b): unavailable: no TensorRT here",
        "gone: unavailable: gone is not installed; install it with: "
        "pip install 'ferrousforge[gone]'",
    ]
    assert main(["devices", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["backends"]) for d in as_json] == [
        ("cpu", ["a", "b", "c"]),
        ("cuda:0", ["a", "b"]),
    ]
