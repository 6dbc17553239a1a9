"""Resumable, verified HTTP downloads that only ever show a complete file at ``dest``.

Bytes go to ``<dest>.partial``; ``<dest>.partial.json`` records the URL, the expected digest
and the server's validators (ETag, Last-Modified) so that a later call, in this process or
another, resumes with ``Range`` + ``If-Range``. The file is hashed, fsynced and renamed into
place only when complete and verified.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from ..errors import DiskFull, DownloadFailed, LimitExceeded
from ..progress import Progress, ProgressCallback, ignore

log = logging.getLogger(__name__)

BLOCK = 1 << 20
MIN_EVENT_BYTES = 256 << 10  # progress every ~1%, but no more often than every 256 KiB
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_RANGE_TOTAL = re.compile(r"bytes\s+\*/(\d+)")


def partial_paths(dest: Path) -> tuple[Path, Path]:
    """The data and state files a download into ``dest`` uses while in progress."""
    return dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".partial.json")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: ProgressCallback = ignore,
    client: httpx.Client | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout = 30.0,
    status: str | None = None,
    max_bytes: int | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically, resuming a previous partial; return its sha256.

    ``timeout`` applies only to the client created here. Raises DownloadFailed for network and
    HTTP errors (the partial is kept for a resume); for a digest mismatch, a file over
    ``max_bytes`` (LimitExceeded) or a full disk (DiskFull) the partial is deleted.
    """
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        return _Download(url, dest, sha256, progress, http, headers, status, max_bytes).run()
    finally:
        if own:
            http.close()


class _Download:
    def __init__(
        self,
        url: str,
        dest: Path,
        sha256: str | None,
        progress: ProgressCallback,
        client: httpx.Client,
        headers: Mapping[str, str] | None,
        status: str | None,
        max_bytes: int | None = None,
    ) -> None:
        self.url, self.dest, self.client, self.max_bytes = url, dest, client, max_bytes
        self.expected = sha256.lower() if sha256 else None
        self.progress = progress
        self.headers = {"Accept-Encoding": "identity", **(headers or {})}
        self.status = status or f"pulling {dest.name}"
        self.digest = f"sha256:{self.expected}" if self.expected else None
        self.partial, self.state = partial_paths(dest)

    def run(self) -> str:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        offset, validator = self._resumable()
        for _ in range(2):  # a second pass only after a 416 that was not "already complete"
            try:
                done = self._fetch(offset, validator)
            except httpx.HTTPError as err:
                reason = str(err) or type(err).__name__
                raise DownloadFailed(f"download of {self.url} failed: {reason}") from err
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    self._discard()  # nothing half-written stays behind
                    raise DiskFull(
                        f"cannot store {self.url}: {err.strerror or err}; "
                        "free some disk space and pull again"
                    ) from err
                raise DownloadFailed(f"cannot write {self.partial}: {err.strerror or err}") from err
            except LimitExceeded:
                self._discard()
                raise
            if done is not None:
                return self._finish(*done)
            self._discard()
            offset, validator = 0, None
        raise DownloadFailed(f"download of {self.url} failed: the server refuses byte ranges")

    def _resumable(self) -> tuple[int, str | None]:
        """(bytes already on disk, If-Range validator) for a partial this URL may resume."""
        try:
            state = json.loads(self.state.read_text())
            size = self.partial.stat().st_size
        except (OSError, ValueError):
            self._discard()
            return 0, None
        recorded = state.get("sha256")
        if state.get("url") != self.url or (recorded and self.expected not in (None, recorded)):
            self._discard()
            return 0, None
        etag = state.get("etag")
        strong = etag if isinstance(etag, str) and not etag.startswith("W/") else None
        validator = strong or state.get("last_modified")
        if validator is None and self.expected is None:
            # no way to know the resource is unchanged, and no digest to catch it: restart
            self._discard()
            return 0, None
        return size, validator

    def _fetch(self, offset: int, validator: str | None) -> tuple[Any, int] | None:
        """Stream the body; return (hasher, size), or None when the partial must be dropped."""
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        with self.client.stream("GET", self.url, headers=headers, follow_redirects=True) as resp:
            if resp.status_code == 416 and offset:
                m = _RANGE_TOTAL.match(resp.headers.get("content-range", ""))
                if m and int(m.group(1)) == offset:  # the partial was already complete
                    return self._hash_prefix(offset), offset
                return None
            if resp.status_code not in (200, 206):
                raise DownloadFailed(
                    f"download of {self.url} failed: HTTP {resp.status_code} "
                    f"{resp.reason_phrase}".rstrip()
                )
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != offset:
                    return None
                total = None if m.group(3) == "*" else int(m.group(3))
                hasher = self._hash_prefix(offset)
                mode = "ab"
                log.info("resuming %s at byte %d", self.url, offset)
            else:
                offset, hasher, mode = 0, hashlib.sha256(), "wb"
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            self._check_room(total, offset)
            self._save_state(resp)
            with self.partial.open(mode) as f:
                size = self._stream(resp, f, hasher, offset, total)
        if total is not None and size != total:
            raise DownloadFailed(f"download of {self.url} failed: got {size} of {total} bytes")
        return hasher, size

    def _stream(
        self, resp: httpx.Response, f: IO[bytes], hasher: Any, done: int, total: int | None
    ) -> int:
        step = max(MIN_EVENT_BYTES, (total or 0) // 100)
        next_event = done
        try:
            for block in resp.iter_raw():
                if self.max_bytes is not None and done + len(block) > self.max_bytes:
                    raise LimitExceeded(
                        f"the download of {self.url}",
                        f"over {self.max_bytes} bytes",
                        self.max_bytes,
                        "pull_max_bytes",
                    )
                f.write(block)
                hasher.update(block)
                done += len(block)
                if done >= next_event:
                    self._event(total, done)
                    next_event = done + step
        finally:
            f.flush()
            os.fsync(f.fileno())
        self._event(total, done)
        return done

    def _check_room(self, total: int | None, offset: int) -> None:
        """Refuse at once what cannot fit: over ``max_bytes``, or over the free disk."""
        if total is None:
            return
        if self.max_bytes is not None and total > self.max_bytes:
            raise LimitExceeded(
                f"the size of {self.url}", f"{total} bytes", self.max_bytes, "pull_max_bytes"
            )
        free = shutil.disk_usage(self.partial.parent).free
        if total - offset > free:
            raise DiskFull(
                f"cannot store {self.url}: it needs {total - offset} bytes, "
                f"{free} are free on {self.partial.parent}"
            )

    def _hash_prefix(self, size: int) -> Any:
        hasher = hashlib.sha256()
        with self.partial.open("rb") as f:
            while block := f.read(min(BLOCK, size)):
                hasher.update(block)
                size -= len(block)
                if not size:
                    break
        return hasher

    def _finish(self, hasher: Any, size: int) -> str:
        self.progress(Progress("verifying sha256 digest", size, size, self.digest))
        actual: str = hasher.hexdigest()
        if self.expected and actual != self.expected:
            self._discard()
            raise DownloadFailed(
                f"sha256 mismatch for {self.url}: expected {self.expected}, got {actual}"
            )
        os.replace(self.partial, self.dest)
        _fsync_dir(self.dest.parent)
        self.state.unlink(missing_ok=True)
        return actual

    def _save_state(self, resp: httpx.Response) -> None:
        state = {
            "url": self.url,
            "sha256": self.expected,
            "etag": resp.headers.get("etag"),
            "last_modified": resp.headers.get("last-modified"),
        }
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state)

    def _event(self, total: int | None, completed: int) -> None:
        self.progress(Progress(self.status, total, completed, self.digest))

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
