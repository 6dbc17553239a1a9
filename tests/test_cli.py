"""The ``forge`` command, run as a real subprocess against a temporary FORGE_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import FileServer
from .tinymodel import write_tiny_gguf

COMMANDS = [
    "run",
    "serve",
    "pull",
    "list",
    "show",
    "rm",
    "cp",
    "ps",
    "devices",
    "embed",
    "infer",
    "hash-key",
    "web",
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "FORGE_HOME": str(tmp_path / "home"),
        "FORGE_THREADS": "1",
        "FORGE_HF_ENDPOINT": "http://127.0.0.1:9",  # never the real hub from tests
        "FORGE_PIP_ARGS": '["--no-index"]',
    }


def forge(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrousforge", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tiny(env: dict[str, str], tmp_path: Path) -> Path:
    path = write_tiny_gguf(tmp_path / "Tiny-Model.gguf")
    r = forge(env, "pull", str(path))
    assert r.returncode == 0, r.stderr
    assert "pulled tiny-model:latest" in r.stdout
    return path


def test_help_everywhere(env: dict[str, str]) -> None:
    top = forge(env, "--help")
    assert top.returncode == 0
    for cmd in COMMANDS:
        assert cmd in top.stdout
        r = forge(env, cmd, "--help")
        assert r.returncode == 0 and "usage: forge " + cmd in r.stdout
    assert "--gpu-layers" in forge(env, "run", "--help").stdout


def test_store_commands(env: dict[str, str], tiny: Path) -> None:
    listing = forge(env, "list").stdout
    assert "tiny-model:latest" in listing and "gguf" in listing
    shown = forge(env, "show", "tiny-model").stdout
    assert "llama" in shown and "registered in place" in shown and str(tiny) in shown
    manifest = json.loads(forge(env, "show", "tiny-model", "--json").stdout)
    assert manifest["sha256"] == hashlib.sha256(tiny.read_bytes()).hexdigest()
    assert forge(env, "cp", "tiny-model", "copy:v2").returncode == 0
    assert "copy:v2" in forge(env, "list").stdout
    assert forge(env, "rm", "tiny-model", "copy:v2").returncode == 0
    assert "tiny-model" not in forge(env, "list").stdout
    assert tiny.exists()  # registered in place: rm never deletes the user's file


def test_run_with_prompt_streams_and_exits(env: dict[str, str], tiny: Path) -> None:
    args = ("run", "tiny-model", "hello", "there", "--temperature", "0", "--max-tokens", "8")
    a, b = forge(env, *args), forge(env, *args)
    assert a.returncode == 0, a.stderr
    assert a.stdout.strip() and a.stdout == b.stdout  # greedy: same answer twice
    piped = forge(
        env, "run", "tiny-model", "--temperature", "0", "--max-tokens", "8", stdin="hello there"
    )
    assert piped.stdout == a.stdout


def test_interactive_run(env: dict[str, str], tiny: Path) -> None:
    main, term = pty.openpty()  # a terminal on stdin makes `forge run` interactive
    cmd = [sys.executable, "-m", "ferrousforge", "run", "tiny-model", "--max-tokens", "4"]
    proc = subprocess.Popen(
        [*cmd, "--verbose"],
        env=env,
        stdin=term,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.write(main, b'hi\n/clear\n"""two\nlines"""\n/nope\n/bye\n')
    out, err = proc.communicate(timeout=120)
    os.close(main)
    os.close(term)
    assert proc.returncode == 0, err
    assert err.count("tokens at") == 2  # two answers, with timings
    assert "(conversation cleared)" in err and "unknown command /nope" in err
    assert out.count(">>> ") == 5 and out.count("... ") == 1


def test_embed_json(env: dict[str, str], tiny: Path) -> None:
    r = forge(env, "embed", "tiny-model", "the hot word", "she said", "--json")
    assert r.returncode == 0, r.stderr
    vectors = json.loads(r.stdout)["embeddings"]
    assert [len(v) for v in vectors] == [64, 64]
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4
    plain = forge(env, "embed", "tiny-model", "the hot word").stdout
    assert plain.startswith("64-d [")


def test_infer_reads_npy_json_and_npz_inputs(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import numpy as np

    from .tensormodels import images, onnxruntime_outputs, write_classifier

    graph = write_classifier(tmp_path / "cls.onnx")
    assert forge(env, "pull", str(graph)).returncode == 0
    x = images(2)
    np.save(tmp_path / "x.npy", x)
    expected = onnxruntime_outputs(graph, {"images": x})
    saved = tmp_path / "out.npz"
    r = forge(env, "infer", "cls", f"images={tmp_path / 'x.npy'}", "--save", str(saved))
    assert r.returncode == 0, r.stderr
    assert re.search(r"probabilities\s+float32\s+\[2, 10\]\s+\[0\.", r.stdout), r.stdout
    with np.load(saved) as got:
        np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-6)
    np.savez(tmp_path / "in.npz", images=x[:1])
    listed = json.dumps(x[:1].tolist())
    for how in (["--npz", str(tmp_path / "in.npz")], [f"images={listed}"]):
        r = forge(env, "infer", "cls", *how, "--outputs", "logits", "--json")
        assert r.returncode == 0, r.stderr
        [out] = json.loads(r.stdout)["outputs"]
        assert (out["name"], out["shape"]) == ("logits", [1, 10])
        np.testing.assert_allclose(out["data"], expected["logits"][0], rtol=1e-5)
    r = forge(env, "infer", "cls", f"images={json.dumps(x[:, :1].tolist())}")
    assert r.returncode == 1 and r.stderr.startswith("Error: input 'images' must have shape")
    assert len(r.stderr.strip().splitlines()) == 1
    r = forge(env, "infer", "cls", "images")
    assert r.returncode != 0 and "not NAME=VALUE" in r.stderr


def test_ps_sees_models_loaded_by_another_process(env: dict[str, str], tiny: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_MODEL],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "loaded"
    try:
        rows = forge(env, "ps").stdout.splitlines()
        assert rows[0].split()[:3] == ["NAME", "BACKEND", "DEVICE"]
        name, backend, device = rows[1].split()[:3]
        assert (name, backend, device) == ("tiny-model:latest", "llama_cpp", "cpu")
        assert str(holder.pid) in rows[1] and "minutes from now" in rows[1]
    finally:
        holder.communicate("", timeout=60)
    assert len(forge(env, "ps").stdout.splitlines()) == 1  # gone with its process


HOLD_MODEL = """
import sys, ferrousforge as ff
with ff.Engine() as engine:
    engine.load("tiny-model", keep_alive="10m")
    print("loaded", flush=True)
    sys.stdin.read()
"""


def test_hash_key(env: dict[str, str]) -> None:
    expected = "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
    assert forge(env, "hash-key", "s3cret").stdout.strip() == expected
    assert forge(env, "hash-key", stdin="s3cret\n").stdout.strip() == expected


def test_serve_refuses_a_busy_port(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = forge(env, "serve", "--port", str(busy.getsockname()[1]))
    assert r.returncode == 1 and "Error: cannot listen on 127.0.0.1:" in r.stderr
    assert "Traceback" not in r.stderr


def test_devices_and_ps(env: dict[str, str]) -> None:
    r = forge(env, "devices")
    assert r.returncode == 0
    assert r.stdout.split()[:2] == ["DEVICE", "BACKENDS"]  # then MEMORY, FREE and the name
    assert any(line.startswith("cpu ") and "llama_cpp" in line for line in r.stdout.splitlines())
    as_json = json.loads(forge(env, "devices", "--json").stdout)
    assert as_json[0]["id"] == "cpu" and as_json[0]["memory_total"] > 0
    assert forge(env, "ps").stdout.startswith("NAME")
    # no TensorRT here: said, with the reason, not left out
    assert "tensorrt (onnx): unavailable: onnxruntime" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nope", "hi"), "Error: model 'nope:latest' not found"),
        (("pull", "./missing.gguf"), "Error: model './missing.gguf' not found; not a file"),
        (("show", "../x"), "Error: invalid model name '../x'"),
        (("show", ""), "Error: invalid model name ''"),
        (("show", "m" * 130), "Error: invalid model name 'mmm"),
        (("cp", "tiny-model", "a/b/c"), "Error: invalid model name 'a/b/c'"),
        (("run", "tiny-model", "x", "--device", "cuda:3"), "Error: device 'cuda:3' is not"),
        (("run", "tiny-model", "x", "--backend", "tensorrt"), "Error: unknown backend 'tensorrt'"),
        (("run", "tiny-model", "x", "--backend", "tvm"), "Error: backend tvm does not read gguf"),
        (("run", "tiny-model", "x", "--keep-alive", "soon"), "Error: bad duration 'soon'"),
    ],
)
def test_errors_are_one_line(
    env: dict[str, str], tiny: Path, args: tuple[str, ...], message: str
) -> None:
    r = forge(env, *args)
    assert r.returncode == 1
    assert r.stderr.startswith(message), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_pull_killed_halfway_resumes(
    env: dict[str, str], http_server: FileServer, tmp_path: Path
) -> None:
    data = write_tiny_gguf(tmp_path / "src.gguf").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    url = http_server.add("/models/remote.gguf", data)
    http_server.chunk_delay = 0.05  # 64 KiB every 50 ms: ~0.4 s for the whole file
    home = Path(env["FORGE_HOME"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrousforge", "pull", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    partial = home / "partial"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size for p in partial.glob("*") if not p.name.endswith(".json")]
        if sizes and max(sizes) >= len(data) // 2:
            break
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    assert proc.returncode != 0
    assert "remote" not in forge(env, "list").stdout  # the partial file is never listed

    http_server.chunk_delay = 0
    r = forge(env, "pull", f"{url}#sha256={digest}")
    assert r.returncode == 0, r.stderr
    ranges = [h.get("Range") for p, h in http_server.requests if p == "/models/remote.gguf"]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1] != "bytes=0-"
    manifest = json.loads(forge(env, "show", "remote", "--json").stdout)
    assert manifest["sha256"] == digest
    assert Path(manifest["path"]).read_bytes() == data
    assert not [p for p in partial.glob("*") if p.is_file()]


def test_web_serves_the_page_with_isolation_headers(env: dict[str, str]) -> None:
    import httpx

    from .labharness import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "ferrousforge", "web", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/web/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.2)
        assert r.status_code == 200 and "<html" in r.text.lower()
        assert r.headers["cross-origin-embedder-policy"] == "require-corp"
        models = httpx.get(f"http://127.0.0.1:{port}/web/models.json").json()
        assert models == {"models": []}  # an empty store
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/web/" in out
