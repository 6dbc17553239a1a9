"""Shared fixtures: ``http_server`` and ``make_small_gguf``, and the no-network guard."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests touch nothing beyond 127.0.0.1: any other connection fails the test."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise AssertionError(f"test tried to reach {host}; only loopback is allowed")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


_RANGE = re.compile(r"bytes=(\d+)-$")
_LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"


@dataclass
class FileServer:
    """A local HTTP file server with Range/If-Range/ETag support and fault injection."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)  # path -> ETag override
    redirects: dict[str, str] = field(default_factory=dict)  # path -> location
    cut_after: dict[str, int] = field(default_factory=dict)  # one-shot: drop after N bytes
    ranges: bool = True  # False: ignore Range, always 200
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (throttling)
    stall: float = 0.0  # seconds before the body is sent
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; return its URL."""
        self.files[path] = data
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base_url + path

    def etag(self, path: str) -> str:
        return self.etags.get(path) or f'"{hashlib.sha256(self.files[path]).hexdigest()[:16]}"'


def _handler(fs: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            fs.requests.append((path, dict(self.headers.items())))
            if path in fs.redirects:
                self.send_response(302)
                self.send_header("Location", fs.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = fs.files.get(path)
            if data is None:
                self.send_error(404)
                return
            start, status = 0, 200
            m = _RANGE.match(self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if fs.ranges and m and (if_range is None or if_range == fs.etag(path)):
                start, status = int(m.group(1)), 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", fs.etag(path))
            self.send_header("Last-Modified", _LAST_MODIFIED)
            if fs.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            time.sleep(fs.stall)
            cut = fs.cut_after.pop(path, None)
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            for i in range(0, len(body), 1 << 16):
                try:
                    self.wfile.write(body[i : i + (1 << 16)])
                except OSError:  # the client went away
                    self.close_connection = True
                    return
                time.sleep(fs.chunk_delay)

    return Handler


@contextlib.contextmanager
def file_server() -> Iterator[FileServer]:
    """A FileServer on 127.0.0.1 (random port) in a thread, until the block ends."""
    fs = FileServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fs))
    server.daemon_threads = True
    fs.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fs
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    """A FileServer for the length of one test."""
    with file_server() as fs:
        yield fs


MakeGGUF = Callable[..., Path]


@pytest.fixture
def make_small_gguf() -> MakeGGUF:
    """A factory writing a small, valid GGUF file with ``gguf.GGUFWriter``; returns its path."""

    def make(
        path: Path,
        *,
        arch: str = "llama",
        n_vocab: int = 300,
        context_length: int = 256,
        file_type: int | None = 7,
        chat_template: str | None = "{{ messages }}",
        pooling: bool = False,
        extra_tensors: Sequence[str] = (),
    ) -> Path:
        import gguf
        import numpy as np

        path.parent.mkdir(parents=True, exist_ok=True)
        w = gguf.GGUFWriter(str(path), arch)
        w.add_name("tiny test model")
        w.add_context_length(context_length)
        w.add_block_count(1)
        w.add_embedding_length(32)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        if file_type is not None:
            w.add_file_type(file_type)
        if pooling:
            w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_tokenizer_model("llama")
        w.add_token_list([f"tok{i}" for i in range(n_vocab)])
        w.add_token_scores([0.0] * n_vocab)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        if chat_template is not None:
            w.add_chat_template(chat_template)
        w.add_tensor("token_embd.weight", np.ones((n_vocab, 32), dtype=np.float32))
        w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
        w.add_tensor(
            "blk.0.attn_q.weight",
            np.zeros((32, 34), dtype=np.uint8),  # 32 rows of one Q8_0 block each
            raw_dtype=gguf.GGMLQuantizationType.Q8_0,
        )
        for name in extra_tensors:
            w.add_tensor(name, np.zeros((4, 32), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    return make


@pytest.fixture(scope="module")
def minilm_engine() -> Iterator[Any]:
    """An engine on the real-model test home (slow tier), or a skip when minilm:l6 is absent."""
    import ferrousforge as ff

    home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    home = home.expanduser()
    if not (home / "manifests/library/minilm/l6.json").is_file():
        pytest.skip(f"minilm:l6 is not in {home}; ./dev.sh test pulls it first")
    with ff.Engine(ff.Settings(home=home, threads=2)) as engine:
        yield engine
