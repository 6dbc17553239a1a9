"""The store never loses what is in use: a blob outlives its manifest while a loaded model
uses it, and processes sharing a home never leave a manifest naming a deleted blob."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

import httpx

import ferrousforge as ff
from ferrousforge.store.manifest import Manifest
from ferrousforge.store.store import Store

from .apiserver import running
from .tinymodel import write_tiny_gguf


def managed(store: Store, name: str, payload: bytes) -> Manifest:
    """A model whose file is a blob of the store (as a URL or catalog pull leaves it)."""
    blob = store.blobs / f"sha256-{name.replace(':', '-')}"
    staging = store.partial / blob.name
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(payload)
    m = Manifest(name=name, source=f"test:{name}", format="gguf", path=str(blob),
                 sha256="0" * 64, size=len(payload))  # fmt: skip
    store.commit(staging, blob, m)
    return m


def test_copy_over_a_loaded_model_keeps_its_blob_until_it_unloads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    loaded = managed(store, "loaded:1", tiny)
    managed(store, "other:1", tiny + b"\0" * 64)
    with running(ff.Settings(home=home)) as srv:
        body = {"model": "loaded:1", "prompt": "the", "raw": True, "stream": False,
                "options": {"num_predict": 4}}  # fmt: skip
        assert httpx.post(srv.url + "/api/generate", json=body).is_success
        r = httpx.post(srv.url + "/api/copy", json={"source": "other:1", "destination": "loaded:1"})
        assert r.status_code == 200
        assert Path(loaded.path).is_file()  # no manifest names it, but a model holds it
        assert httpx.get(srv.url + "/api/ps").json()["models"][0]["name"] == "loaded:1"
        r = httpx.request("DELETE", srv.url + "/api/delete", json={"model": "other:1"})
        assert r.status_code == 200
        r = httpx.post(srv.url + "/api/generate", json={"model": "loaded:1", "keep_alive": 0})
        assert r.json()["done_reason"] == "unload"
        assert not Path(loaded.path).exists()  # unloaded: now it goes
    assert Store(home).check() == {}


def test_another_process_holding_a_model_keeps_its_blob(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    m = managed(store, "held:1", write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes())
    with ff.Engine(ff.Settings(home=home, threads=1)) as engine:
        assert engine.generate("held:1", "the", raw=True, options={"max_tokens": 2}).text
        other = Store(home)  # the CLI of the same user, say: it sees run/<pid>.json
        other.rm("held:1")
        assert Path(m.path).is_file()
        assert other.sweep() == []
    assert not Path(m.path).exists()  # the engine let it go when it unloaded


def _churn(home: str, seed: int, rounds: int) -> None:
    """Pull (commit a blob), copy and remove four names, as fast as it can."""
    rng = random.Random(seed)
    store = Store(Path(home))
    names = ["a:1", "b:1", "c:1", "d:1"]
    for i in range(rounds):
        src, dst = rng.sample(names, 2)
        op = rng.random()
        try:
            if op < 0.4:
                store.cp(src, dst)
            elif op < 0.7:
                store.rm(dst)
            else:
                managed(store, f"{dst}-{seed}-{i}", b"x")  # another blob, named, then named over
                store.cp(f"{dst}-{seed}-{i}", dst)
                store.rm(f"{dst}-{seed}-{i}")
        except ff.errors.ModelNotFound:
            pass


def test_processes_sharing_a_home_never_leave_a_dangling_manifest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    for name in ("a:1", "b:1"):
        managed(store, name, name.encode() * 100)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_churn, args=(str(home), seed, 400)) for seed in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    for m in Store(home).list():
        assert Path(m.path).is_file(), f"{m.name} names a deleted blob"
