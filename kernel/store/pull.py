"""Pulls into the store: catalog models (fetched from the store's sources), local files and
folders (registered in place), and URLs (resumed from ``home/partial``). Each ends in one
``Store.commit`` or ``Store.save``, so a pull that fails leaves no half-written model."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urldefrag, urlparse

from ..errors import (
    Forbidden,
    InvalidModelFile,
    InvalidModelName,
    ModelNotFound,
    NameTaken,
    StorageError,
    UnsupportedFormat,
)
from ..progress import Progress, ProgressCallback, ignore
from . import gguf
from .catalog import CatalogEntry, lookup
from .formats import (
    check_sha,
    detect_format,
    folder_digest,
    hash_file,
    listing,
    metadata_for,
    validate,
)
from .locks import pull_lock
from .manifest import FileEntry, Manifest
from .names import ModelName, parse_name, sanitize
from .policy import PullPolicy
from .sources import CatalogFetcher
from .store import Store


def pull(
    store: Store,
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
    policy = policy or store.policy
    target = parse_name(name) if name is not None else None
    kind = check_spec(store, spec, policy)
    if isinstance(kind, CatalogEntry):
        with pull_lock(store.locks, kind.name, progress):
            manifest = _pull_catalog(store, kind, target, progress, policy)
    elif isinstance(kind, Path):
        if not kind.exists():
            known = ", ".join(store.catalog)
            raise ModelNotFound(spec, f"not a file, URL or catalog model ({known})")
        manifest = _pull_local(store, kind, target, check_sha(sha256), progress, force)
    else:
        with pull_lock(store.locks, urldefrag(spec)[0], progress):
            manifest = _pull_url(store, spec, target, sha256, progress, policy, force)
    progress(Progress("success"))
    return manifest


def check_spec(
    store: Store, spec: str, policy: PullPolicy | None = None
) -> CatalogEntry | Path | str:
    """What ``spec`` names (a catalog entry, a path, or a URL), refusing at once, before
    any download, what ``policy`` does not allow."""
    policy = policy or store.policy
    if spec.startswith(("http://", "https://")):
        policy.check_url(spec)
        return spec
    try:
        entry = lookup(spec, store.catalog)
    except InvalidModelName:
        entry = None
    return entry if entry is not None else policy.check_path(Path(spec))


def _unless_taken(store: Store, target: ModelName, source: str, force: bool) -> None:
    """Refuse a derived name that another source's model holds (unless ``force``)."""
    try:
        existing = store.read(target)
    except StorageError:
        return  # unreadable: replacing it loses nothing
    if existing is not None and existing.source != source and not force:
        raise NameTaken(
            f"{target} already exists (from {existing.source}); pass a name, or force to replace it"
        )


def _pull_catalog(
    store: Store,
    entry: CatalogEntry,
    target: ModelName | None,
    progress: ProgressCallback,
    policy: PullPolicy,
) -> Manifest:
    target = target or parse_name(entry.name)
    files = [FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in entry.files]
    digest = folder_digest(files) if entry.folder else files[0].sha256
    blob = store.blobs / f"sha256-{digest}"
    existing = store.read(target)
    if (
        existing
        and existing.options == dict(entry.options)
        and existing.path == str(blob)
        and _blob_ok(store, blob, entry)
    ):
        return existing
    staging = None
    if _blob_ok(store, blob, entry):  # another name already has these files
        sources = [m.source for m in store.list() if m.path == str(blob)]
        source = sources[0] if sources else entry.sources[0].label
    else:
        staging = store.partial / f"sha256-{digest}"
        source = _fetcher(store).fetch(entry, staging, progress, policy)
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
    return _keep(store, staging, blob, manifest, progress)


def _keep(
    store: Store, staging: Path | None, blob: Path, manifest: Manifest, progress: ProgressCallback
) -> Manifest:
    """Save ``manifest``, moving a verified ``staging`` download to ``blob`` with it."""
    progress(Progress("writing manifest"))
    if staging is None:
        store.save(manifest)
    else:
        store.commit(staging, blob, manifest)
    return manifest


def _fetcher(store: Store) -> CatalogFetcher:
    return CatalogFetcher(
        store.sources,
        store.pip_args,
        store.hf_endpoint,
        store.hf_token,
        store.timeout,
        store.partial,
    )


def _blob_ok(store: Store, blob: Path, entry: CatalogEntry) -> bool:
    if not entry.folder:
        return blob.is_file() and blob.stat().st_size == entry.files[0].size
    return all(
        (blob / f.path).is_file() and (blob / f.path).stat().st_size == f.size for f in entry.files
    )


def _pull_local(
    store: Store,
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
        _unless_taken(store, target, source, force)
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
    store.save(manifest)
    return manifest


def _pull_url(
    store: Store,
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
        _unless_taken(store, target, url, force)  # before any byte is fetched
    blob = store.blobs / f"sha256-{expected}"
    staging = None
    if expected and blob.is_file():
        digest = expected
        fmt = detect_format(blob, filename)
        header = validate(blob, fmt)
    else:
        staging = store.partial / hashlib.sha256(url.encode()).hexdigest()
        from .download import download  # lazy: httpx costs import time

        with policy.named(url).client(store.timeout) as client:
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
        blob = store.blobs / f"sha256-{digest}"
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
    return _keep(store, staging, blob, manifest, progress)


def _regular(path: Path) -> Path:
    """``path`` if it is a folder or a regular file: FIFOs, devices and sockets would block
    or never end when read."""
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Forbidden(f"{path} is not a regular file or folder")
    return path
