from __future__ import annotations

import base64
import hashlib
import threading
import zipfile
from pathlib import Path

import pytest

from ferrousforge.errors import (
    DownloadFailed,
    InvalidModelFile,
    InvalidModelName,
    ModelNotFound,
    UnsupportedFormat,
)
from ferrousforge.progress import Progress, ProgressCallback
from ferrousforge.store.catalog import CatalogEntry, CatalogFile, HFSource, PyPISource, WheelMember
from ferrousforge.store.formats import folder_digest
from ferrousforge.store.manifest import FileEntry
from ferrousforge.store.store import Store

FOLDER = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"\0" * 4096,
    "1_Pooling/config.json": b"{}",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel, enough for ``pip download --no-index --find-links``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()}"
        f",{len(d)}\n"
        for p, d in files.items()
    )
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")
    return path


@pytest.fixture
def gguf_bytes(tmp_path, make_small_gguf):
    return make_small_gguf(tmp_path / "src" / "tiny.gguf").read_bytes()


@pytest.fixture
def catalog(gguf_bytes) -> dict[str, CatalogEntry]:
    chunks = (
        WheelMember("ff-test-tiny-part1==1.0", "ff_test_tiny_part1/tiny.gguf.part0"),
        WheelMember("ff-test-tiny-part2==1.0", "ff_test_tiny_part2/tiny.gguf.part1"),
    )
    folder_files = tuple(CatalogFile(p, sha(d), len(d)) for p, d in FOLDER.items())
    return {
        "tiny:q8": CatalogEntry(
            name="tiny:q8",
            format="gguf",
            files=(CatalogFile("tiny.gguf", sha(gguf_bytes), len(gguf_bytes)),),
            sources=(PyPISource((("tiny.gguf", chunks),)), HFSource("org/tiny", "abc123")),
            description="a tiny test model",
        ),
        "emb:small": CatalogEntry(
            name="emb:small",
            format="safetensors",
            files=folder_files,
            sources=(
                PyPISource(
                    tuple(
                        (f.path, (WheelMember("ff-test-emb==0.1", f"ff_test_emb/m/{f.path}"),))
                        for f in folder_files
                    )
                ),
                HFSource("org/emb"),
            ),
            folder=True,
            model_type="embedding",
            architecture="bert",
        ),
    }


@pytest.fixture
def wheels(tmp_path, gguf_bytes):
    folder = tmp_path / "wheels"
    folder.mkdir()
    half = len(gguf_bytes) // 2
    for i, chunk in enumerate([gguf_bytes[:half], gguf_bytes[half:]]):
        name = f"ff-test-tiny-part{i + 1}"
        make_wheel(folder, name, "1.0", {f"ff_test_tiny_part{i + 1}/tiny.gguf.part{i}": chunk})
    make_wheel(folder, "ff-test-emb", "0.1", {f"ff_test_emb/m/{p}": d for p, d in FOLDER.items()})
    return folder


def local_pip(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def recorder() -> tuple[list[Progress], ProgressCallback]:
    events: list[Progress] = []
    return events, events.append


def blob_names(home: Path) -> list[str]:
    blobs = home / "blobs"
    return sorted(p.name for p in blobs.iterdir()) if blobs.exists() else []


# -- local files ---------------------------------------------------------------------------


def test_local_file_registered_in_place(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "Tiny-Model.Q8_0.gguf")
    before = path.read_bytes()
    store = Store(tmp_path / "home")
    events, cb = recorder()
    m = store.pull(str(path), progress=cb)
    assert m.name == "tiny-model.q8_0:latest"
    assert (m.managed, m.path, m.source) == (False, str(path), f"file:{path}")
    assert m.sha256 == sha(before) and m.size == len(before)
    assert m.metadata.architecture == "llama" and m.metadata.quantization == "Q8_0"
    assert events[-1].status == "success"
    assert any(e.status.startswith("hashing") for e in events)
    assert blob_names(store.home) == []  # nothing copied
    assert store.get("tiny-model.q8_0") == m
    store.rm("tiny-model.q8_0")
    assert store.list() == [] and path.read_bytes() == before


def test_local_file_with_name_and_digest(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "t.gguf")
    store = Store(tmp_path / "home")
    m = store.pull(str(path), name="Me/Tiny:v1", sha256=sha(path.read_bytes()).upper())
    assert m.name == "me/tiny:v1"
    with pytest.raises(InvalidModelFile, match="sha256 mismatch"):
        store.pull(str(path), name="other", sha256="0" * 64)
    assert [x.name for x in store.list()] == ["me/tiny:v1"]


def test_local_folder(tmp_path):
    folder = tmp_path / "emb"
    for p, d in {**FOLDER, ".git/HEAD": b"x"}.items():
        (folder / p).parent.mkdir(parents=True, exist_ok=True)
        (folder / p).write_bytes(d)
    m = Store(tmp_path / "home").pull(str(folder))
    assert (m.name, m.format, m.managed) == ("emb:latest", "safetensors", False)
    assert sorted(f.path for f in m.files) == sorted(FOLDER)
    assert m.sha256 == folder_digest(m.files)


def test_corrupt_local_gguf(tmp_path, make_small_gguf):
    data = make_small_gguf(tmp_path / "t.gguf").read_bytes()
    store = Store(tmp_path / "home")
    for i, bad in enumerate([b"GGML" + data[4:], data[:100], data[:-1]]):
        path = tmp_path / f"bad{i}.gguf"
        path.write_bytes(bad)
        with pytest.raises(InvalidModelFile):
            store.pull(str(path))
    assert store.list() == []


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedFormat, match="known formats: gguf"):
        Store(tmp_path / "home").pull(str(path))


def test_names_are_checked(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "t.gguf")
    store = Store(tmp_path / "home")
    for bad in ["../x", "a b", "x/y/z", ".hidden"]:
        with pytest.raises(InvalidModelName):
            store.pull(str(path), name=bad)
        with pytest.raises(InvalidModelName):
            store.get(bad)
    assert store.list() == []
    assert not (tmp_path / "x").exists()


def test_missing_models(tmp_path):
    store = Store(tmp_path / "home")
    with pytest.raises(ModelNotFound, match="run: forge pull smollm2"):
        store.get("smollm2")
    with pytest.raises(ModelNotFound) as info:
        store.get("nothing")
    assert "forge pull" not in str(info.value)
    with pytest.raises(ModelNotFound, match="not a file, URL or catalog model"):
        store.pull("nothing-here")
    assert not store.exists("smollm2")


# -- URLs -----------------------------------------------------------------------------------


def test_url_pull_cp_rm(tmp_path, http_server, gguf_bytes):
    url = http_server.add("/files/Tiny.gguf", gguf_bytes)
    store = Store(tmp_path / "home")
    m = store.pull(url)
    digest = sha(gguf_bytes)
    assert (m.name, m.source, m.managed, m.sha256) == ("tiny:latest", url, True, digest)
    assert Path(m.path) == store.home / "blobs" / f"sha256-{digest}"
    assert Path(m.path).read_bytes() == gguf_bytes
    assert m.files == [FileEntry(path="Tiny.gguf", sha256=digest, size=len(gguf_bytes))]
    assert list((store.home / "partial").iterdir()) == []

    store.cp("tiny", "copy:v2")
    assert [x.name for x in store.list()] == ["copy:v2", "tiny:latest"]
    store.rm("tiny")
    assert blob_names(store.home) == [f"sha256-{digest}"]  # still used by copy:v2
    assert store.get("copy:v2").path == m.path
    store.rm("copy:v2")
    assert blob_names(store.home) == [] and store.list() == []


def test_url_pull_resumes(tmp_path, http_server, gguf_bytes):
    url = http_server.add("/tiny.gguf", gguf_bytes)
    http_server.cut_after["/tiny.gguf"] = len(gguf_bytes) // 3
    store = Store(tmp_path / "home")
    with pytest.raises(DownloadFailed):
        store.pull(url)
    assert store.list() == [] and blob_names(store.home) == []
    assert any(p.name.endswith(".partial") for p in (store.home / "partial").iterdir())

    m = Store(tmp_path / "home").pull(url + f"#sha256={sha(gguf_bytes)}")  # a "new process"
    assert Path(m.path).read_bytes() == gguf_bytes
    assert http_server.requests[-1][1]["Range"] == f"bytes={len(gguf_bytes) // 3}-"
    assert list((store.home / "partial").iterdir()) == []


def test_concurrent_pulls_of_one_url_download_once(tmp_path, http_server, gguf_bytes):
    url = http_server.add("/tiny.gguf", gguf_bytes) + f"#sha256={sha(gguf_bytes)}"
    http_server.stall = 0.5  # the first pull holds the lock at least this long
    events: list[Progress] = []
    results: list[str] = []

    def pull() -> None:  # each thread its own Store, as two processes would have
        results.append(Store(tmp_path / "home").pull(url, progress=events.append).sha256)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [sha(gguf_bytes)] * 2
    assert len(http_server.requests) == 1  # the second waited, then found the blob
    assert any(e.status.startswith("waiting for another pull") for e in events)


def test_url_checksum_mismatch(tmp_path, http_server, gguf_bytes):
    url = http_server.add("/tiny.gguf", gguf_bytes)
    store = Store(tmp_path / "home")
    with pytest.raises(DownloadFailed, match=f"expected {'a' * 64}, got {sha(gguf_bytes)}"):
        store.pull(f"{url}#sha256={'a' * 64}")
    assert store.list() == [] and blob_names(store.home) == []
    assert list((store.home / "partial").iterdir()) == []


def test_url_truncated_gguf(tmp_path, http_server, gguf_bytes):
    url = http_server.add("/tiny.gguf", gguf_bytes[:-64])
    store = Store(tmp_path / "home")
    with pytest.raises(InvalidModelFile, match="truncated GGUF file"):
        store.pull(url)
    assert store.list() == [] and blob_names(store.home) == []
    assert list((store.home / "partial").iterdir()) == []


# -- the catalog ----------------------------------------------------------------------------


def test_catalog_pull_from_pypi(tmp_path, catalog, wheels, gguf_bytes):
    store = Store(tmp_path / "home", pip_args=local_pip(wheels), sources=("pypi",), catalog=catalog)
    events, cb = recorder()
    m = store.pull("tiny", progress=cb)  # the family's default tag
    assert m.name == "tiny:q8"
    assert m.source == "pypi:ff-test-tiny-part1==1.0,ff-test-tiny-part2==1.0"
    assert Path(m.path).read_bytes() == gguf_bytes  # the two chunks, concatenated
    assert m.metadata.architecture == "llama" and m.metadata.description == "a tiny test model"
    assert events[-1].status == "success"
    assert any(e.status == "pulling tiny.gguf" and e.completed == e.total for e in events)

    # idempotent: no pip (this index is empty, so running pip would fail)
    empty = tmp_path / "empty"
    empty.mkdir()
    again = Store(store.home, pip_args=local_pip(empty), sources=("pypi",), catalog=catalog)
    assert again.pull("tiny:q8").sha256 == m.sha256
    assert again.get("tiny") == again.get("tiny:q8")

    e = store.pull("emb:small")
    assert (e.format, e.metadata.model_type, e.metadata.architecture) == (
        "safetensors",
        "embedding",
        "bert",
    )
    assert Path(e.path).is_dir() and e.sha256 == folder_digest(e.files)
    for p, d in FOLDER.items():
        assert (Path(e.path) / p).read_bytes() == d
    stored = [q.relative_to(e.path).as_posix() for q in Path(e.path).rglob("*") if q.is_file()]
    assert sorted(stored) == sorted(FOLDER)
    assert list((store.home / "partial").iterdir()) == []


def test_catalog_pull_from_hf_with_fallback(tmp_path, catalog, http_server, gguf_bytes):
    http_server.add("/org/tiny/resolve/abc123/tiny.gguf", gguf_bytes)
    for p, d in FOLDER.items():
        http_server.add(f"/org/emb/resolve/main/{p}", d)
    empty = tmp_path / "empty"
    empty.mkdir()
    store = Store(
        tmp_path / "home",
        pip_args=local_pip(empty),  # the pypi source fails: nothing to find
        hf_endpoint=http_server.base_url,
        catalog=catalog,
    )
    m = store.pull("tiny:q8")
    assert m.source == "hf:org/tiny@abc123"
    assert Path(m.path).read_bytes() == gguf_bytes
    e = Store(store.home, hf_endpoint=http_server.base_url, sources=("hf",), catalog=catalog).pull(
        "emb"
    )
    assert e.sha256 == folder_digest(e.files) and (Path(e.path) / "1_Pooling/config.json").exists()
    assert [x.name for x in store.list()] == ["emb:small", "tiny:q8"]


def test_catalog_checksum_mismatch(tmp_path, catalog, http_server, gguf_bytes):
    http_server.add("/org/tiny/resolve/abc123/tiny.gguf", gguf_bytes[::-1])
    store = Store(
        tmp_path / "home", hf_endpoint=http_server.base_url, sources=("hf",), catalog=catalog
    )
    with pytest.raises(DownloadFailed, match="could not pull tiny:q8: hf: sha256 mismatch"):
        store.pull("tiny")
    assert store.list() == [] and blob_names(store.home) == []
