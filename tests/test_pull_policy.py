"""What ``/api/pull`` may reach: server folders, URL hosts, redirects, sizes and names."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferrousforge as ff
from ferrousforge.errors import DiskFull, Forbidden, LimitExceeded, ModelNotFound, NameTaken
from ferrousforge.store.policy import PullPolicy
from ferrousforge.store.store import Store

from .apiserver import Running, running
from .conftest import FileServer
from .tinymodel import write_tiny_gguf

HTTP = PullPolicy(paths=(), private_hosts=("127.0.0.1",))  # the API's, with loopback allowed


@pytest.fixture
def gguf(tmp_path: Path) -> bytes:
    return write_tiny_gguf(tmp_path / "tiny-source.gguf").read_bytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    settings = ff.Settings(home=tmp_path / "home", pull_paths=[allowed])
    with running(settings) as srv:
        yield srv


def pull(srv: Running, spec: str, **body: Any) -> httpx.Response:
    return httpx.post(srv.url + "/api/pull", json={"model": spec, "stream": False} | body)


# -- server paths ------------------------------------------------------------------------


def test_path_pulls_over_http_only_from_allowed_folders(server: Running, tmp_path: Path) -> None:
    inside = write_tiny_gguf(tmp_path / "allowed" / "inside.gguf")
    outside = write_tiny_gguf(tmp_path / "outside.gguf")
    assert pull(server, str(inside)).json() == {"status": "success", "model": "inside:latest"}
    for spec in (str(outside), str(tmp_path / "missing.gguf"), "/etc/passwd", "../../etc"):
        r = pull(server, spec)
        assert r.status_code == 404, r.text  # the same whether the path exists or not
        assert "folders pulls over HTTP read" in r.json()["error"]
    link = tmp_path / "allowed" / "link.gguf"
    link.symlink_to(outside)  # a link out of the folder is judged by where it points
    assert pull(server, str(link)).status_code == 404
    names = {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}
    assert names == {"inside:latest"}


def test_a_spec_no_file_can_be_named_is_not_found(server: Running) -> None:
    """Found by the fuzzer: a NUL, a lone surrogate or an unknown ~user in a path was a 500."""
    for spec in ("a\u0000b", "\ud90f.gguf", "x/\u0000", "~no-such-user-x/m.gguf"):
        for stream in (False, True):
            body = json.dumps({"model": spec, "stream": stream})  # \u escapes, as fuzzers send
            r = httpx.post(server.url + "/api/pull", content=body)
            assert r.status_code == 404 and "not a file name" in r.json()["error"], r.text


def test_no_folders_no_path_pulls(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "model.gguf")
    with running(ff.Settings(home=tmp_path / "home")) as srv:
        r = pull(srv, str(tmp_path / "model.gguf"))
        assert r.status_code == 404 and "--pull-path" in r.json()["error"]


@pytest.mark.timeout(30)
def test_fifos_devices_and_sockets_are_refused(server: Running, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    os.mkfifo(allowed / "pipe.gguf")  # reading it would block the pull thread forever
    assert pull(server, str(allowed / "pipe.gguf")).status_code == 403
    folder = allowed / "folder"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx")
    os.mkfifo(folder / "tokenizer.json")
    r = pull(server, str(folder))
    assert r.status_code == 403 and "not a regular file" in r.json()["error"]
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(allowed / "sock.gguf"))
    try:
        assert pull(server, str(allowed / "sock.gguf")).status_code == 403
    finally:
        sock.close()


# -- URLs --------------------------------------------------------------------------------


def test_redirects_to_private_addresses_are_refused_before_any_socket(
    tmp_path: Path, http_server: FileServer, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public file that redirects to the LAN: refused at resolution, nothing connects."""
    real = socket.getaddrinfo

    def resolve(host: str, port: Any, *a: Any, **kw: Any) -> Any:
        if host == "router.internal":  # a name whose DNS answer is a private address
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]
        return real(host, port, *a, **kw)

    connects: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        connects.append(address)
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket.socket, "connect", connect)
    http_server.add("/model.gguf", gguf)
    for target in ("http://router.internal/admin", "http://10.0.0.7/x", "http://[::1]:1/x",
                   "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):  # fmt: skip
        http_server.redirects["/model.gguf"] = target
        store = Store(tmp_path / "home", policy=HTTP)
        with pytest.raises(Forbidden) as e:
            store.pull(http_server.url("/model.gguf"))
        assert "private address" in str(e.value) or "http(s) URLs only" in str(e.value)
    assert all(addr[0] == "127.0.0.1" for addr in connects), connects  # never the LAN
    assert not (tmp_path / "home" / "manifests").exists()


def test_a_named_private_url_needs_allowing_over_http(tmp_path: Path, http_server: FileServer,
                                                      gguf: bytes) -> None:  # fmt: skip
    url = http_server.add("/tiny.gguf", gguf)
    with running(ff.Settings(home=tmp_path / "home")) as srv:
        r = pull(srv, url)
        assert r.status_code == 403 and "pull_private_hosts" in r.json()["error"]
    private = ff.Settings(home=tmp_path / "home", pull_private_hosts=["127.0.0.0/8"])
    with running(private) as srv:
        assert pull(srv, url).json()["model"] == "tiny:latest"
    assert Store(tmp_path / "cli").pull(url).name == "tiny:latest"  # the user's own CLI: fine


def test_pull_hosts_limit_where_urls_go(tmp_path: Path, http_server: FileServer) -> None:
    policy = PullPolicy(paths=(), hosts=("127.0.0.1",), private_hosts=("127.0.0.1",))
    store = Store(tmp_path / "home", policy=policy)
    with pytest.raises(Forbidden, match="pull_hosts"):
        store.pull("https://huggingface.co/x/model.gguf")  # refused before any DNS
    http_server.redirects["/hop.gguf"] = "http://localhost:1/x.gguf"
    with pytest.raises(Forbidden, match="pull_hosts"):
        store.pull(http_server.url("/hop.gguf"))


def test_size_limit_and_disk_space(
    tmp_path: Path, http_server: FileServer, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = http_server.add("/tiny.gguf", gguf)
    small = PullPolicy(private_hosts=("127.0.0.1",), max_bytes=len(gguf) - 1)
    store = Store(tmp_path / "home", policy=small)
    with pytest.raises(LimitExceeded, match="pull_max_bytes"):
        store.pull(url)
    assert not any(store.partial.iterdir())  # nothing half-written stays
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=100))
    with pytest.raises(DiskFull, match="100 are free"):  # refused before a byte is written
        Store(tmp_path / "home", policy=HTTP).pull(url)
    assert not any(store.partial.iterdir()) and not (tmp_path / "home" / "blobs").exists()


def test_errors_leak_no_file_contents(tmp_path: Path, http_server: FileServer) -> None:
    url = http_server.add("/secret.gguf", b"TOP-SECRET-TOKEN " * 10)
    store = Store(tmp_path / "home", policy=HTTP)
    with pytest.raises(Exception) as e:
        store.pull(url)
    assert "TOP-SECRET" not in str(e.value) and "partial" not in str(e.value)
    assert url in str(e.value)


def test_a_name_from_a_url_never_replaces_another_model(
    tmp_path: Path, http_server: FileServer, gguf: bytes
) -> None:
    (tmp_path / "mine").mkdir()
    mine = write_tiny_gguf(tmp_path / "mine" / "tiny.gguf")
    store = Store(tmp_path / "home", policy=HTTP)
    store.pull(str(mine), policy=PullPolicy(trusted=True))  # tiny:latest, from a file
    url = http_server.add("/tiny.gguf", gguf)
    with pytest.raises(NameTaken, match="already exists"):
        store.pull(url)
    assert not http_server.requests  # refused before any byte was fetched
    assert store.get("tiny").source == f"file:{mine.resolve()}"
    assert store.pull(url, force=True).source == url
    assert store.pull(url).source == url  # the same URL again: an update, not a clash
    assert store.pull(url, name="other").name == "other:latest"  # a chosen name is the user's


def test_abandoned_partials_are_swept_by_age(tmp_path: Path, http_server: FileServer,
                                             gguf: bytes) -> None:  # fmt: skip
    http_server.cut_after["/tiny.gguf"] = 100
    url = http_server.add("/tiny.gguf", gguf)
    store = Store(tmp_path / "home", policy=HTTP, partial_max_age=3600)
    with pytest.raises(Exception, match="download"):
        store.pull(url)
    partials = list(store.partial.iterdir())
    assert partials  # kept for a resume
    assert store.sweep() == []
    old = time.time() - 7200
    for p in partials:
        os.utime(p, (old, old))
    assert sorted(store.sweep()) == sorted(partials)
    assert not any(store.partial.iterdir())


def test_path_not_found_is_404_and_forbidden_is_403(server: Running) -> None:
    assert pull(server, "no-such-model").status_code == 404
    r = httpx.post(server.url + "/api/pull", json={"model": "ftp://x/y.gguf"})
    assert r.status_code == 404  # not a URL this engine pulls: no scheme matched


def test_policy_unit() -> None:
    p = PullPolicy(paths=(Path("/srv/models"),), private_hosts=("10.1.0.0/16",))
    with pytest.raises(ModelNotFound):
        p.check_path(Path("/srv/models/../secrets"))
    assert p.check_path(Path("/srv/models/a.gguf")) == Path("/srv/models/a.gguf")
    import ipaddress

    p.check_address("mirror", ipaddress.ip_address("10.1.2.3"))
    for address in ("10.2.0.1", "127.0.0.1", "169.254.1.1", "::1", "fd00::1", "::ffff:10.0.0.1"):
        with pytest.raises(Forbidden):
            p.check_address("x", ipaddress.ip_address(address))
    p.check_address("example.com", ipaddress.ip_address("93.184.216.34"))
