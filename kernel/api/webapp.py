"""The browser build over HTTP: ``/web/`` (the page, ``forge.js`` and the runtimes in
``vendor/``), ``/web/models.json`` (what the store holds that a browser Mold can run) and
``/web/models/<name>/<file>`` (those models' files). Every response carries COOP/COEP, so
the page is cross-origin isolated and WASM threads work. ``export`` writes the same tree
as a static folder.

``prepare`` converts what a page needs to embed each model on both targets (minilm:l6 gets
minilm:l6-onnx for WASM). ``forge web`` and ``forge serve`` run it at start, and a page may
ask for it with ``POST /web/prepare``; a GET never converts anything.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import Field

from .. import forms
from ..engine import AsyncEngine
from ..errors import ConfigError, ForgeError, InvalidModelName, ModelNotFound, NotFound
from ..progress import Progress, ProgressCallback, ignore
from ..schema import Body
from ..store.formats import is_decoder, max_text_tokens
from ..store.manifest import Manifest
from ..store.store import Store

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".wgsl": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".zip": "application/zip",
    ".whl": "application/zip",
}
# Files of a model folder that each browser runtime reads; nothing else is served.
_FOLDER_FILES = {
    "onnx": ("model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"),
    "safetensors": ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"),
}
_RUNTIMES = {"onnx": "ort", "safetensors": "pyodide", "gguf": "wllama"}
# The formats a page embeds from, by target: ORT-web reads ONNX on both, the Pyodide Mold
# reads safetensors on WebGPU only (web/runtimes/).
EMBED_FORMATS = {"wasm": ("onnx",), "webgpu": ("onnx", "safetensors")}
_SKIP = {"__init__.py", "__pycache__", "build.mjs"}
MARKER = ".forge-export"  # in every exported folder: the models it holds, as JSON


def root() -> Path:
    """The folder of the static app (``web/`` in a checkout)."""
    return Path(str(resources.files("ferrousforge.web")))


def built() -> bool:
    """Whether ``npm run build`` has gathered the runtimes into ``vendor/``."""
    return (root() / "vendor" / "ort" / "ort.wasm.min.mjs").is_file()


def require_built() -> None:
    if not built():
        raise ConfigError("the browser runtimes are not built: run `npm ci && npm run build`")


@dataclass
class BrowserModel:
    """One store model as a browser Mold sees it (an entry of ``models.json``)."""

    name: str
    runtime: str  # "ort" | "pyodide" | "wllama"
    task: str  # "embed" | "chat"
    format: str
    base: str  # URL folder of its files, relative to the page: "models/minilm/l6-onnx/"
    files: dict[str, int] = field(default_factory=dict)  # served name -> bytes
    size: int = 0
    max_length: int | None = None
    parent: str | None = None
    digest: str = ""  # the manifest's sha256: browsers cache the files under it
    sources: dict[str, Path] = field(default_factory=dict, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["sources"]
        return data


def browser_model(manifest: Manifest) -> BrowserModel | None:
    """The browser view of ``manifest``, or None when no browser runtime reads its format."""
    runtime = _RUNTIMES.get(manifest.format)
    if runtime is None:
        return None
    path = manifest.file
    if manifest.format == "gguf":
        sources = {"model.gguf": path}
    else:
        main, *rest = _FOLDER_FILES[manifest.format]
        # A file registered in place (`forge pull dir/encoder.onnx`) is served as the
        # runtime's model file; its companions come from the same folder.
        folder, model = (path.parent, path) if path.is_file() else (path, path / main)
        wanted = {main: model} | {n: folder / n for n in rest}
        sources = {n: p for n, p in wanted.items() if p.is_file()}
        if not {main, "tokenizer.json"} <= sources.keys():
            return None
    if not all(p.is_file() for p in sources.values()):
        return None
    max_length = None
    if runtime != "wllama":
        max_length = max_text_tokens(next(iter(sources.values())).parent)
    files = {n: p.stat().st_size for n, p in sources.items()}
    return BrowserModel(
        name=manifest.name,
        runtime=runtime,
        task="chat" if runtime == "wllama" else "embed",
        format=manifest.format,
        base="models/" + manifest.name.replace(":", "/") + "/",
        files=files,
        size=sum(files.values()),
        max_length=max_length,
        parent=manifest.parent,
        digest=manifest.sha256[:16],
        sources=sources,
    )


def browser_models(manifests: Iterable[Manifest]) -> list[BrowserModel]:
    """Every model of ``manifests`` (the store's) a browser Mold can run, by name."""
    found = (browser_model(m) for m in manifests)
    return sorted((m for m in found if m is not None), key=lambda m: m.name)


def catalog(models: list[BrowserModel]) -> dict[str, Any]:
    return {"models": [m.public() for m in models]}


@dataclass
class Prepared:
    """What ``prepare`` converted, and why a model could not get every form it needs."""

    made: list[str] = field(default_factory=list)
    failed: dict[str, ForgeError] = field(default_factory=dict)


def prepare(
    store: Store, progress: ProgressCallback = ignore, names: Sequence[str] = ()
) -> Prepared:
    """Convert what a page needs to embed each browser model (of ``names``, else all) with
    target ``wasm`` and ``webgpu``; the new entries stay in the store. A model whose forms
    cannot be made is kept in ``failed``, and the others are still prepared."""

    before = {m.name for m in store.list()}
    done = Prepared()
    for manifest in [store.get(n) for n in names] if names else store.list():
        model = browser_model(manifest)
        if model is None or model.task != "embed":
            continue
        if manifest.format == "safetensors" and is_decoder(manifest.file):
            continue  # no browser runtime generates from safetensors
        for target, formats in EMBED_FORMATS.items():
            reader = f"the browser on {target}"
            try:
                form = forms.form_in(store, manifest, formats, reader, progress=progress)
            except ForgeError as e:
                done.failed[manifest.name] = e
                break
            except Exception as e:  # an exporter failing on a model it cannot trace
                failure = ForgeError(f"cannot convert {manifest.name} for the browser: {e}")
                failure.__cause__ = e
                done.failed[manifest.name] = failure
                break
            if form is not None and form.name not in before and form.name not in done.made:
                done.made.append(form.name)
    return done


class PrepareBody(Body):
    model: str = Field(min_length=1, max_length=500)


def _static(path: Path) -> Response:
    media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers=ISOLATION)


def _app_file(relative: str) -> Path | None:
    """The app's file at ``relative``, or None outside the app, missing, or not served."""
    base = root().resolve()
    target = (base / relative).resolve()
    if not (target.is_relative_to(base) and target.is_file()):
        return None
    return None if _SKIP & set(target.relative_to(base).parts) else target


def router(engine: AsyncEngine, guarded: Sequence[Any] = ()) -> APIRouter:
    """The /web routes, listing and serving models through ``engine``. The app's files are
    public; the model routes take the API's ``guarded`` dependencies (its keys)."""
    web = APIRouter(prefix="/web", tags=["web"], include_in_schema=False)

    @web.api_route("", methods=["GET", "HEAD"])
    async def home() -> Response:
        # relative: under a hub's service prefix /services/forge/web goes to .../web/
        return RedirectResponse("web/", headers=ISOLATION)

    @web.api_route("/models.json", methods=["GET", "HEAD"], dependencies=list(guarded))
    async def models() -> Response:
        return JSONResponse(catalog(browser_models(await engine.list())), headers=ISOLATION)

    @web.post("/prepare", dependencies=list(guarded))
    async def prepare_model(body: PrepareBody) -> Response:
        """Convert what the page needs for ``model`` (see ``prepare``); the new catalog."""
        done = await engine.store_job(
            f"preparing {body.model} for the browser",
            lambda store, report: prepare(store, report, [body.model]),
        )
        if done.failed:
            raise next(iter(done.failed.values()))
        answer = {"made": done.made} | catalog(browser_models(await engine.list()))
        return JSONResponse(answer, headers=ISOLATION)

    @web.api_route("/models/{rest:path}", methods=["GET", "HEAD"], dependencies=list(guarded))
    async def model_file(rest: str) -> Response:
        folder, _, name = rest.rpartition("/")
        family, _, tag = folder.rpartition("/")  # base is models/<name with ':' as '/'>/
        model = None
        with contextlib.suppress(InvalidModelName, ModelNotFound):  # no such file either
            if family:
                model = browser_model(await engine.show(f"{family}:{tag}"))
        if model is None or model.base != f"models/{folder}/" or name not in model.sources:
            raise ModelNotFound(f"no browser model file {rest!r}: see /web/models.json")
        return _static(model.sources[name])

    @web.api_route("/{rest:path}", methods=["GET", "HEAD"])
    async def static(rest: str) -> Response:
        found = _app_file(rest or "index.html")
        if found is None:
            raise NotFound(f"no such file in the web app: /web/{rest}")
        return _static(found)

    return web


# Netlify's and Cloudflare Pages' format: the same headers on every path.
HEADERS_FILE = "/*\n" + "".join(f"  {key}: {value}\n" for key, value in ISOLATION.items())


def _app_files() -> Iterator[tuple[Path, str]]:
    base = root()
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base)
        if path.is_file() and not (_SKIP & set(relative.parts)):
            yield path, relative.as_posix()


def export(
    store: Store,
    target: Path,
    names: list[str],
    progress: ProgressCallback = ignore,
) -> list[BrowserModel]:
    """Write the app, its runtimes and the models ``names`` with the forms made from them
    (all browser models when empty) into ``target``, ready for any static host that sends
    the headers in ``_headers``.

    The new tree is built next to ``target`` and swapped in whole, so a reader never sees a
    mix of two exports and models no longer chosen disappear. Files unchanged since the
    previous export are hardlinked from it, not copied. Only an empty folder or a previous
    export (it holds ``.forge-export``) is replaced."""
    require_built()
    every = {m.name: m for m in browser_models(store.list())}
    picked: dict[str, BrowserModel] = {}
    for name in names or list(every):
        manifest = store.get(name)
        model = every.get(manifest.name)
        if model is None:
            raise ConfigError(f"{name} has no browser runtime (it is {manifest.format})")
        picked[model.name] = model  # with the forms made from it, so each target has one
        picked |= {m.name: every[m.name] for m in store.derived(model.name) if m.name in every}
    chosen = list(picked.values())
    jobs = list(_app_files())
    jobs += [(src, m.base + n) for m in chosen for n, src in m.sources.items()]
    total, done = sum(src.stat().st_size for src, _ in jobs), 0
    target = target.resolve()
    previous = _previous_export(target)
    staging = _sibling(target, "partial")
    staging.mkdir()
    try:
        # Written first, so a staging folder left by a killed export is known as ours.
        (staging / MARKER).write_text(json.dumps({"models": [m.name for m in chosen]}) + "\n")
        for src, rel in jobs:
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            _place(src, out, previous / rel if previous else None)
            done += src.stat().st_size
            progress(Progress(f"exporting to {target}", total, done))
        (staging / "models.json").write_text(json.dumps(catalog(chosen), indent=1))
        (staging / "_headers").write_text(HEADERS_FILE)
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return chosen


def _sibling(target: Path, kind: str) -> Path:
    """A fresh name next to ``target``, so renames between them stay on one filesystem."""
    return target.with_name(f"{target.name}.{kind}-{secrets.token_hex(4)}")


def _leftovers(target: Path, kind: str) -> list[Path]:
    """Our ``kind`` siblings of ``target`` left by an interrupted export, oldest first."""
    found = target.parent.glob(f"{glob.escape(target.name)}.{kind}-*")
    ours = [p for p in found if (p / MARKER).is_file()]
    return sorted(ours, key=lambda p: (p / MARKER).stat().st_mtime_ns)


def _previous_export(target: Path) -> Path | None:
    """``target`` when it holds a previous export, None when it is missing or empty.

    A crash between the two renames of a swap leaves ``target`` missing and the previous
    export set aside: it is put back. Other leftovers of interrupted exports are removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = _leftovers(target, "old")
    if aside and not target.exists():
        aside.pop().rename(target)
    for stale in aside + _leftovers(target, "partial"):
        shutil.rmtree(stale, ignore_errors=True)
    if (target / MARKER).is_file():
        return target
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return None
    raise ConfigError(f"will not replace {target}: it is neither empty nor a previous export")


def _place(src: Path, out: Path, previous: Path | None) -> None:
    """Put ``src`` at ``out``, as a hardlink to the previous export's copy when current."""
    if previous is not None and previous.is_file():
        old, new = previous.stat(), src.stat()
        if old.st_size == new.st_size and old.st_mtime >= new.st_mtime:
            with contextlib.suppress(OSError):  # no hardlinks on this filesystem: copy
                os.link(previous, out)
                return
    shutil.copyfile(src, out)


def _swap(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing the folder there if any."""
    aside = _sibling(target, "old") if target.exists() else None
    if aside is not None:
        target.rename(aside)
    try:
        staging.rename(target)
    except OSError:
        if aside is not None:
            aside.rename(target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)  # a leftover is removed by the next export
