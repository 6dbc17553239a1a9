"""Rerank over HTTP (``/v1/rerank`` and its aliases) through a real server: a tiny generated
cross-encoder on the torch backend and, converted, on the onnx backend, scoring what
transformers computes itself; the cosine path on minilm:l6; the request shapes and limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import ferrousforge as ff
from ferrousforge.client import RemoteEngine
from ferrousforge.convert import convert
from ferrousforge.engine_rerank import _scoring
from ferrousforge.errors import LimitExceeded, RequestError, UnsupportedFormat, UnsupportedTask

from .apiserver import Running, running
from .crossencoder import reference_scores, write_cross_encoder
from .nullmodels import add_null_model

QUERY = "a cat sits"
DOCUMENTS = [
    "the kitten is sitting on the mat",
    "stock market prices fall",
    "xyz!",
    "a cat sits",
    "rain " * 200,  # longer than the model's 128 tokens: the pair is cut, as transformers cuts it
]
MODELS = {"torch": "ce:tiny", "onnx": "ce:tiny-onnx"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers", reason="the torch extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    return write_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server over a store holding the cross-encoder, its ONNX form and a null model."""
    home = tmp_path_factory.mktemp("home")
    settings = ff.Settings(home=home, keep_alive=600, max_rerank_documents=8)
    with ff.Engine(settings) as engine:
        engine.pull(str(folder), name="ce:tiny")
        engine.convert("ce:tiny", "onnx")  # `forge convert ce:tiny --to onnx`
    add_null_model(home, "echo:1", {})
    with running(settings) as srv:
        yield srv


def post(srv: Running, path: str, body: Any) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, timeout=120)


def scores_by_index(answer: dict[str, Any]) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in answer["results"]}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cross_encoder_scores_are_the_models_own_logits(
    server: Running, folder: Path, backend: str
) -> None:
    r = post(
        server, "/v1/rerank", {"model": MODELS[backend], "query": QUERY, "documents": DOCUMENTS}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["object"], answer["model"], answer["scoring"]) == (
        "list",
        MODELS[backend],
        "cross-encoder",
    )
    expected = reference_scores(folder, QUERY, DOCUMENTS)
    got = scores_by_index(answer)
    assert sorted(got) == list(range(len(DOCUMENTS)))
    for i, score in enumerate(expected):
        assert got[i] == pytest.approx(score, abs=1e-4)
    ordered = [r["relevance_score"] for r in answer["results"]]
    assert ordered == sorted(ordered, reverse=True)
    assert "document" not in answer["results"][0]
    tokens = answer["usage"]["prompt_tokens"]
    assert tokens == answer["usage"]["total_tokens"] > 128  # the long pair counts its 128
    loaded = {m.name: m for m in server.engine.loaded()}
    assert loaded[f"{MODELS[backend]}"].backend == backend


def test_a_cross_encoder_reranks_and_does_not_embed(server: Running, folder: Path) -> None:
    manifest = server.engine.store.get("ce:tiny")
    assert manifest.metadata.tags == ["rerank"] and manifest.metadata.architecture == "bert"
    onnx = server.engine.store.get("ce:tiny-onnx")
    assert (onnx.format, onnx.parent) == ("onnx", "ce:tiny")
    graph = pytest.importorskip("onnx").load(str(onnx.file / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"]  # the classification head, exported
    with pytest.raises(UnsupportedFormat, match="cross-encoder"):
        convert(server.engine.store, "ce:tiny", "tvm")
    r = post(server, "/api/embed", {"model": "ce:tiny", "input": "a cat"})
    assert r.status_code == 400 and "cannot embed" in r.json()["error"]
    row = post(server, "/api/generate", {"model": "ce:tiny", "prompt": "hi", "stream": False})
    assert row.status_code == 400
    runner = server.engine.scheduler.runners["ce:tiny"]
    assert runner.mold.tasks == frozenset({"rerank", "tokenize"})


def test_request_shapes_top_n_and_return_documents(server: Running) -> None:
    body: dict[str, Any] = {
        "model": "ce:tiny",
        "query": QUERY,
        "documents": [{"text": d, "title": "ignored"} for d in DOCUMENTS[:4]],  # Cohere/Jina
        "top_n": 2,
        "return_documents": True,
        "keep_alive": None,  # nulls mean "not set"
        "truncation": True,  # fields of other APIs are ignored
    }
    answers = [post(server, path, body) for path in ("/v1/rerank", "/v1/reranking", "/rerank")]
    answers.append(post(server, "/api/rerank", body))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    results = answers[0].json()["results"]
    assert [r["index"] for r in results] == [3, 0]
    assert [r["document"]["text"] for r in results] == [DOCUMENTS[3], DOCUMENTS[0]]
    for other in answers[1:]:
        again = other.json()["results"]
        assert [(r["index"], r["document"]) for r in again] == [
            (r["index"], r["document"]) for r in results
        ]
        assert [r["relevance_score"] for r in again] == pytest.approx(
            [r["relevance_score"] for r in results], abs=1e-5
        )
    plain = post(server, "/v1/rerank", {**body, "documents": DOCUMENTS[:4], "top_n": None})
    assert len(plain.json()["results"]) == 4
    metrics = httpx.get(server.url + "/metrics").text  # the engine's hooks saw each one
    assert 'forge_inferences_total{model="ce:tiny",outcome="ok",task="rerank"}' in metrics


def test_an_embedding_model_reranks_by_cosine(server: Running) -> None:
    docs = ["one two", "a cat sits", "three"]
    r = post(server, "/v1/rerank", {"model": "echo:1", "query": "a cat sits", "documents": docs})
    answer = r.json()
    assert answer["scoring"] == "cosine"
    assert answer["results"][0]["index"] == 1
    assert answer["results"][0]["relevance_score"] == pytest.approx(1.0)
    assert all(-1 <= x["relevance_score"] <= 1 for x in answer["results"])


def test_the_engines_rerank_in_process_and_remotely(server: Running) -> None:
    with RemoteEngine(server.url) as remote:
        ranking = remote.rerank("ce:tiny", QUERY, DOCUMENTS[:4], top_n=3)
        assert ranking.scoring == "cross-encoder" and len(ranking.results) == 3
        best = ranking.results[0]
        assert (best.index, best.document) == (3, DOCUMENTS[3])
        assert ranking.stats.prompt_eval_count > 0
        with pytest.raises(LimitExceeded) as too_many:
            remote.rerank("ce:tiny", QUERY, ["x"] * 9)
        assert too_many.value.setting == "max_rerank_documents"
    with ff.Engine(server.engine.settings) as engine:
        local = engine.rerank("ce:tiny-onnx", QUERY, DOCUMENTS[:4], top_n=3)
        assert [(x.index, x.document) for x in local.results] == [
            (x.index, x.document) for x in ranking.results
        ]
        assert [x.score for x in local.results] == pytest.approx(
            [x.score for x in ranking.results], abs=1e-4
        )
        with pytest.raises(RequestError, match="documents is empty"):
            engine.rerank("ce:tiny", QUERY, [])


def test_a_model_that_neither_embeds_nor_reranks_cannot_rerank() -> None:
    chat_only = SimpleNamespace(name="chat:1", tasks=frozenset({"chat", "generate"}))
    with pytest.raises(UnsupportedTask, match="neither a cross-encoder nor an embedding"):
        _scoring(chat_only)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"documents": []}, 400, "documents is empty"),
        ({"documents": ["x"] * 9}, 400, "max_rerank_documents"),
        ({"top_n": 0}, 400, "top_n is 0"),
        ({"query": None}, 400, "query"),
        ({"documents": [{"image": "x.png"}]}, 400, "documents"),
        ({"model": "nope"}, 404, "not found"),
        ({"documents": ["x" * 9000]}, 413, ""),
    ],
)
def test_bad_requests_are_refused_with_their_reason(
    limited: Running, body: dict[str, Any], status: int, message: str
) -> None:
    request = {"model": "echo:1", "query": "q", "documents": ["a", "b"], **body}
    r = post(limited, "/v1/rerank", request)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    ollama = post(limited, "/api/rerank", request)  # Ollama's error shape there
    assert ollama.status_code == status and message in ollama.json()["error"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("limited")
    add_null_model(home, "echo:1", {})
    with running(ff.Settings(home=home, max_rerank_documents=8, max_body_bytes=8000)) as srv:
        yield srv


@pytest.mark.slow
def test_minilm_ranks_the_relevant_document_first_by_cosine(minilm_engine: ff.Engine) -> None:
    docs = ["stock market", "a kitten is sitting", "The quick brown fox jumps."]
    with running(ff.Settings(home=minilm_engine.settings.home, threads=2)) as srv:
        r = post(
            srv, "/v1/rerank", {"model": "minilm:l6", "query": "a cat sits", "documents": docs}
        )
    answer = r.json()
    assert answer["scoring"] == "cosine"
    assert answer["results"][0]["index"] == 1
    best = answer["results"][0]["relevance_score"]
    assert best >= 0.7 and answer["results"][-1]["relevance_score"] <= 0.2
    vectors = minilm_engine.embed("minilm:l6", ["a cat sits", *docs]).embeddings
    cosine = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))  # unit vectors
    assert best == pytest.approx(cosine, abs=1e-5)
