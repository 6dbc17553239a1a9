"""The /web routes and ``forge web --export`` (no browser): headers, media types, what
``models.json`` offers from the store, path safety, the API keys, and the exported tree."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

import ferrousforge as ff
from ferrousforge import convert
from ferrousforge.api import webapp
from ferrousforge.cli.main import main
from ferrousforge.errors import ConfigError
from ferrousforge.progress import Progress
from ferrousforge.store.manifest import FileEntry, Manifest
from ferrousforge.store.store import Store

from .apiserver import running

ISOLATED = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
}


def add(home: Path, name: str, fmt: str, files: dict[str, bytes], **kw: str) -> Manifest:
    """A model of fake bytes in the store: a folder of ``files``, or one file for gguf."""
    folder = home / "src" / name.replace(":", "_")
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    path = folder / next(iter(files)) if fmt == "gguf" else folder
    entries = [FileEntry(path=r, sha256="0" * 64, size=len(d)) for r, d in files.items()]
    manifest = Manifest(
        name=name,
        source="test",
        format=fmt,
        path=str(path),
        managed=False,
        sha256="ab" * 32,
        size=sum(e.size for e in entries),
        files=entries,
        **kw,
    )
    Store(home).save(manifest)
    return manifest


@pytest.fixture
def web_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for web/: a page, a module, a wasm file, and files that must not be served."""
    root = tmp_path / "webroot"
    (root / "vendor/ort").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>forge</title>")
    (root / "forge.js").write_text("export const x = 1;")
    (root / "vendor/ort/ort.wasm.min.mjs").write_text("export default 1;")
    (root / "vendor/ort/ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "build.mjs").write_text("// the build script")
    (root / "__init__.py").write_text("")
    (tmp_path / "secret.txt").write_text("not for the web")
    monkeypatch.setattr(webapp, "root", lambda: root)
    return root


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    tok = {"tokenizer.json": b"{}", "config.json": b"{}"}
    add(home, "enc:onnx", "onnx", {"model.onnx": b"onnx!" * 10, **tok, "notes.txt": b"private"})
    add(home, "enc:st", "safetensors", {"model.safetensors": b"st" * 8, **tok})
    add(home, "chat:small", "gguf", {"chat.gguf": b"GGUF" * 5})
    add(home, "enc:no-tokenizer", "onnx", {"model.onnx": b"x"})
    add(home, "enc:tvm", "tvm", {"model.onnx": b"x", **tok})
    return home


def test_models_json_lists_what_a_browser_runtime_can_run(home: Path, web_root: Path) -> None:
    with running(ff.Settings(home=home)) as srv:
        r = httpx.get(srv.url + "/web/models.json")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert set(models) == {"enc:onnx", "enc:st", "chat:small"}
    assert models["enc:onnx"]["runtime"] == "ort"
    assert models["enc:st"]["runtime"] == "pyodide"
    assert (models["chat:small"]["runtime"], models["chat:small"]["task"]) == ("wllama", "chat")
    assert models["enc:onnx"]["files"] == {"model.onnx": 50, "tokenizer.json": 2, "config.json": 2}
    assert models["chat:small"]["files"] == {"model.gguf": 20}
    assert models["enc:onnx"]["base"] == "models/enc/onnx/"
    assert models["enc:onnx"]["max_length"] == 512  # no sentence-bert config: the default


def test_static_files_carry_isolation_headers_and_media_types(home: Path, web_root: Path) -> None:
    with running(ff.Settings(home=home)) as srv, httpx.Client(base_url=srv.url) as client:
        get = client.get
        page = get("/web/")
        mjs = get("/web/vendor/ort/ort.wasm.min.mjs")
        wasm = get("/web/vendor/ort/ort-wasm-simd-threaded.wasm")
        model = get("/web/models/enc/onnx/model.onnx")
        gguf = get("/web/models/chat/small/model.gguf")
        redirect = get("/web", follow_redirects=False)
    assert page.text.startswith("<!doctype html>")
    assert page.headers["content-type"].startswith("text/html")
    assert mjs.headers["content-type"].startswith("text/javascript")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content == b"\0asm\1\0\0\0"
    assert model.content == b"onnx!" * 10
    assert gguf.content == b"GGUF" * 5
    for response in (page, mjs, wasm, model):
        assert ISOLATED.items() <= response.headers.items(), response.url
        assert response.headers["cross-origin-resource-policy"] == "same-origin"
    assert (
        redirect.status_code == 307 and redirect.headers["location"] == "web/"
    )  # relative: it works under a prefix


@pytest.mark.parametrize(
    "path",
    [
        "/web/build.mjs",
        "/web/__init__.py",
        "/web/%2e%2e/secret.txt",
        "/web/..%2fsecret.txt",
        "/web/models/enc/onnx/notes.txt",  # in the model folder, but not a file runtimes read
        "/web/models/enc/tvm/model.onnx",
        "/web/models/a%20b/c/model.onnx",  # not a model name at all
        "/web/models/model.gguf",
        "/web/nothing.js",
    ],
)
def test_only_the_app_and_model_files_are_served(home: Path, web_root: Path, path: str) -> None:
    with running(ff.Settings(home=home)) as srv:
        r = httpx.get(srv.url + path)
    assert r.status_code == 404, r.text
    assert "error" in r.json() and "not for the web" not in r.text


def test_with_api_keys_the_page_is_public_but_models_need_the_key(
    home: Path, web_root: Path
) -> None:
    with running(ff.Settings(home=home, api_keys=["k1"])) as srv:
        page = httpx.get(srv.url + "/web/")
        anonymous = httpx.get(srv.url + "/web/models.json")
        keyed = httpx.get(srv.url + "/web/models.json", headers={"Authorization": "Bearer k1"})
        file = httpx.get(srv.url + "/web/models/chat/small/model.gguf")
    assert page.status_code == 200
    assert (anonymous.status_code, keyed.status_code, file.status_code) == (401, 200, 401)


def test_export_writes_a_static_tree_with_the_chosen_models(
    home: Path, web_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    assert main(["--home", str(home), "web", "--export", str(out), "--model", "enc:onnx"]) == 0
    assert (out / "index.html").read_text() == (web_root / "index.html").read_text()
    assert (out / "vendor/ort/ort-wasm-simd-threaded.wasm").read_bytes() == b"\0asm\1\0\0\0"
    assert (out / "models/enc/onnx/model.onnx").read_bytes() == b"onnx!" * 10
    assert not (out / "models/enc/onnx/notes.txt").exists()
    assert not (out / "models/chat").exists() and not (out / "build.mjs").exists()
    catalog = json.loads((out / "models.json").read_text())
    assert [m["name"] for m in catalog["models"]] == ["enc:onnx"]
    headers = (out / "_headers").read_text()
    assert "Cross-Origin-Embedder-Policy: require-corp" in headers


def siblings(out: Path) -> list[str]:
    """The names in ``out``'s folder that start with its name: staging or set-aside trees."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name))


def test_export_swaps_in_a_whole_new_tree_and_drops_models_no_longer_chosen(
    home: Path, web_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    webapp.export(Store(home), out, ["enc:onnx", "chat:small"])
    inode = (out / "models/enc/onnx/model.onnx").stat().st_ino
    (web_root / "index.html").write_text("<!doctype html><title>forge, the next one</title>")
    seen = set()

    def look(_: Progress) -> None:  # a reader of the folder while the export runs
        listed = json.loads((out / "models.json").read_text())["models"]
        page = (out / "index.html").read_text()
        seen.add((page, tuple(m["name"] for m in listed), (out / "models/chat").exists()))

    webapp.export(Store(home), out, ["enc:onnx"], look)
    assert seen == {("<!doctype html><title>forge</title>", ("enc:onnx", "chat:small"), True)}
    assert not (out / "models/chat").exists()
    assert (out / "index.html").read_text().endswith("the next one</title>")
    assert [m["name"] for m in json.loads((out / "models.json").read_text())["models"]] == [
        "enc:onnx"
    ]
    assert json.loads((out / webapp.MARKER).read_text()) == {"models": ["enc:onnx"]}
    # unchanged files are hardlinked from the previous export, not copied again
    assert (out / "models/enc/onnx/model.onnx").stat().st_ino == inode
    assert siblings(out) == ["site"]


def test_export_refuses_a_folder_that_is_not_a_previous_export(
    home: Path, web_root: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=f"will not replace {re.escape(str(mine))}: "):
        webapp.export(Store(home), mine, ["enc:onnx"])
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert siblings(mine) == ["mine"]
    empty = tmp_path / "empty"
    empty.mkdir()
    webapp.export(Store(home), empty, ["enc:onnx"])  # an empty folder is fine
    assert (empty / "models/enc/onnx/model.onnx").is_file()


def test_a_failed_export_leaves_the_previous_one_whole(
    home: Path, web_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "site"
    webapp.export(Store(home), out, ["enc:onnx"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    copy = shutil.copyfile
    copied: list[Path] = []

    def copy_then_fail(src: Path, dst: Path) -> Path:
        if copied:
            raise OSError("disk full")
        copied.append(dst)
        return copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        webapp.export(Store(home), out, ["enc:onnx", "enc:st", "chat:small"])
    assert copied  # it failed in the middle, after copying a file
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert siblings(out) == ["site"]


def test_export_recovers_from_a_crash_between_the_swap_renames(
    home: Path, web_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    webapp.export(Store(home), out, ["enc:onnx"])
    inode = (out / "models/enc/onnx/model.onnx").stat().st_ino
    out.rename(tmp_path / "site.old-dead")  # the previous export, set aside
    (tmp_path / "site.partial-dead").mkdir()  # the new one, half built
    (tmp_path / "site.partial-dead" / webapp.MARKER).write_text("{}")
    (tmp_path / "site.partial-theirs").mkdir()  # not ours: left alone
    webapp.export(Store(home), out, ["enc:onnx"])
    assert (out / "models/enc/onnx/model.onnx").stat().st_ino == inode  # recovered, then linked
    assert siblings(out) == ["site", "site.partial-theirs"]


def test_a_single_onnx_file_registered_in_place_is_served_as_model_onnx(
    home: Path, web_root: Path
) -> None:
    tok = {"tokenizer.json": b"{}", "config.json": b"{}"}
    files = {"encoder.onnx": b"the encoder", "model.onnx": b"another model", **tok}
    manifest = add(home, "enc:file", "onnx", files)
    Store(home).save(manifest.model_copy(update={"path": manifest.path + "/encoder.onnx"}))
    lonely = add(home, "enc:lonely", "onnx", {"lonely.onnx": b"no tokenizer"})
    Store(home).save(lonely.model_copy(update={"path": lonely.path + "/lonely.onnx"}))
    with running(ff.Settings(home=home)) as srv, httpx.Client(base_url=srv.url) as client:
        models = {m["name"]: m for m in client.get("/web/models.json").json()["models"]}
        model = client.get("/web/models/enc/file/model.onnx")
        tokenizer = client.get("/web/models/enc/file/tokenizer.json")
    assert models["enc:file"]["files"] == {"model.onnx": 11, "tokenizer.json": 2, "config.json": 2}
    assert "enc:lonely" not in models
    assert (model.status_code, model.content) == (200, b"the encoder")
    assert tokenizer.content == b"{}"


def test_export_refuses_models_without_a_browser_runtime(home: Path, web_root: Path) -> None:
    with pytest.raises(ConfigError, match="enc:tvm has no browser runtime"):
        webapp.export(Store(home), home / "out", ["enc:tvm"])


def test_export_needs_the_runtimes_built(
    home: Path, web_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (web_root / "vendor/ort/ort.wasm.min.mjs").unlink()
    assert main(["--home", str(home), "web", "--export", str(home / "out")]) != 0
    assert "npm run build" in capsys.readouterr().err


def test_web_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["web", "--help"])
    text = capsys.readouterr().out
    assert "--export DIR" in text and "--port" in text and "static" in text


def test_only_a_guarded_post_converts(
    home: Path, web_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """models.json never converts; POST /web/prepare does, behind the keys and the site guard,
    and keeps what it made (the export's ONNX step is faked: the bytes are not a model)."""
    made: list[str] = []

    def fake(store: Store, model: str, to: str, *a: object, **kw: object) -> Manifest:
        made.append(f"{model} -> {to}")
        files = {"model.onnx": b"exported", "tokenizer.json": b"{}", "config.json": b"{}"}
        return add(store.home, f"{model}-{to}", to, files, parent=model)

    monkeypatch.setattr(convert, "convert", fake)
    key = {"Authorization": "Bearer k1"}
    with (
        running(ff.Settings(home=home, api_keys=["k1"])) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        listed = [
            c.request(m, "/web/models.json", headers=key).status_code for m in ("GET", "HEAD")
        ]
        refused = [
            c.get("/web/prepare", headers=key).status_code,
            c.post("/web/prepare", json={"model": "enc:st"}).status_code,
            c.post(
                "/web/prepare",
                json={"model": "enc:st"},
                headers=key | {"Origin": "https://elsewhere.example"},
            ).status_code,
        ]
        assert made == [] and Store(home).derived("enc:st") == []
        first = c.post("/web/prepare", json={"model": "enc:st"}, headers=key | {"Origin": srv.url})
        again = c.post("/web/prepare", json={"model": "enc:st"}, headers=key)
        missing = c.post("/web/prepare", json={"model": "enc:nothing"}, headers=key)
        chat = c.post("/web/prepare", json={"model": "chat:small"}, headers=key)
    assert listed == [200, 200] and refused == [404, 401, 403]
    assert first.status_code == 200, first.text
    assert first.headers["cross-origin-embedder-policy"] == "require-corp"
    assert first.json()["made"] == ["enc:st-onnx"]
    models = {m["name"]: m for m in first.json()["models"]}
    assert (models["enc:st-onnx"]["runtime"], models["enc:st-onnx"]["parent"]) == ("ort", "enc:st")
    assert (again.json()["made"], chat.json()["made"]) == ([], [])  # kept; chat needs none
    assert missing.status_code == 404 and "enc:nothing" in missing.json()["error"]
    assert made == ["enc:st -> onnx"]


def test_export_brings_the_forms_of_a_chosen_model(
    home: Path, web_root: Path, tmp_path: Path
) -> None:
    tok = {"tokenizer.json": b"{}", "config.json": b"{}"}
    add(home, "enc:st-onnx", "onnx", {"model.onnx": b"exported", **tok}, parent="enc:st")
    webapp.export(Store(home), tmp_path / "site", ["enc:st"])
    listed = json.loads((tmp_path / "site/models.json").read_text())["models"]
    assert [m["name"] for m in listed] == ["enc:st", "enc:st-onnx"]
    assert (tmp_path / "site/models/enc/st-onnx/model.onnx").read_bytes() == b"exported"
