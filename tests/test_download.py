from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from ferrousforge.errors import DownloadFailed
from ferrousforge.progress import Progress, ProgressCallback
from ferrousforge.store.download import download, partial_paths

DATA = os.urandom(3 * 2**20 + 123)
SHA = hashlib.sha256(DATA).hexdigest()


def _events() -> tuple[list[Progress], ProgressCallback]:
    events: list[Progress] = []
    return events, events.append


def test_download(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    events, cb = _events()
    dest = tmp_path / "m.bin"
    assert download(url, dest, sha256=SHA, progress=cb) == SHA
    assert dest.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]
    pulls = [e for e in events if e.status == "pulling m.bin"]
    assert pulls[-1].completed == pulls[-1].total == len(DATA)
    assert all(e.digest == f"sha256:{SHA}" for e in pulls)
    assert 4 <= len(pulls) <= 110
    assert http_server.requests[0][1]["Accept-Encoding"] == "identity"


def test_resume_after_interruption(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    http_server.cut_after["/m.bin"] = 1_000_000
    dest = tmp_path / "m.bin"
    with pytest.raises(DownloadFailed, match=r"download of http://127\.0\.0\.1:\d+/m\.bin failed"):
        download(url, dest, sha256=SHA)
    partial, state = partial_paths(dest)
    assert not dest.exists()
    assert partial.stat().st_size == 1_000_000
    assert json.loads(state.read_text())["etag"] == http_server.etag("/m.bin")

    assert download(url, dest, sha256=SHA) == SHA
    assert dest.read_bytes() == DATA
    assert not partial.exists() and not state.exists()
    headers = http_server.requests[-1][1]
    assert headers["Range"] == "bytes=1000000-"
    assert headers["If-Range"] == http_server.etag("/m.bin")


def test_resume_without_expected_digest(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    http_server.cut_after["/m.bin"] = 500_000
    dest = tmp_path / "m.bin"
    with pytest.raises(DownloadFailed):
        download(url, dest)
    assert download(url, dest) == SHA
    assert dest.read_bytes() == DATA
    assert http_server.requests[-1][1]["Range"] == "bytes=500000-"


def test_changed_resource_restarts(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    http_server.cut_after["/m.bin"] = 500_000
    dest = tmp_path / "m.bin"
    with pytest.raises(DownloadFailed):
        download(url, dest)
    new = os.urandom(1_000_000)
    http_server.add("/m.bin", new)  # new ETag: If-Range fails and the server sends 200
    assert download(url, dest) == hashlib.sha256(new).hexdigest()
    assert dest.read_bytes() == new


def test_server_without_ranges_restarts(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    http_server.cut_after["/m.bin"] = 500_000
    dest = tmp_path / "m.bin"
    with pytest.raises(DownloadFailed):
        download(url, dest, sha256=SHA)
    http_server.ranges = False
    assert download(url, dest, sha256=SHA) == SHA
    assert dest.read_bytes() == DATA


def test_complete_partial_gets_416(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    dest = tmp_path / "m.bin"
    partial, state = partial_paths(dest)
    partial.write_bytes(DATA)  # the previous run died between the last byte and the rename
    state.write_text(json.dumps({"url": url, "sha256": SHA, "etag": http_server.etag("/m.bin")}))
    assert download(url, dest, sha256=SHA) == SHA
    assert dest.read_bytes() == DATA
    assert http_server.requests[-1][1]["Range"] == f"bytes={len(DATA)}-"


def test_oversized_partial_restarts(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA[:1000])
    dest = tmp_path / "m.bin"
    partial, state = partial_paths(dest)
    partial.write_bytes(DATA[:5000])
    state.write_text(json.dumps({"url": url, "sha256": None, "etag": http_server.etag("/m.bin")}))
    assert download(url, dest) == hashlib.sha256(DATA[:1000]).hexdigest()


def test_partial_for_another_url_is_discarded(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    dest = tmp_path / "m.bin"
    partial, state = partial_paths(dest)
    partial.write_bytes(b"junk" * 1000)
    state.write_text(json.dumps({"url": url + "?other", "sha256": SHA, "etag": None}))
    assert download(url, dest, sha256=SHA) == SHA
    assert "Range" not in http_server.requests[-1][1]


def test_checksum_mismatch(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    dest = tmp_path / "m.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadFailed) as info:
        download(url, dest, sha256=wrong)
    assert f"expected {wrong}, got {SHA}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_redirect(tmp_path, http_server):
    http_server.add("/real.bin", DATA)
    http_server.redirects["/alias.bin"] = http_server.url("/real.bin")
    assert download(http_server.url("/alias.bin"), tmp_path / "x", sha256=SHA) == SHA


def test_http_error(tmp_path, http_server):
    url = http_server.url("/missing.bin")
    with pytest.raises(DownloadFailed, match=r"download of .*/missing\.bin failed: HTTP 404"):
        download(url, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/m.bin"
    with pytest.raises(DownloadFailed) as info:
        download(url, tmp_path / "x")
    assert url in str(info.value) and "\n" not in str(info.value)


def test_timeout(tmp_path, http_server):
    url = http_server.add("/m.bin", DATA)
    http_server.stall = 1.0
    with pytest.raises(DownloadFailed, match=r"ReadTimeout|timed out"):
        download(url, tmp_path / "x", timeout=0.2)
