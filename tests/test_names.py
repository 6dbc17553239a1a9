from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from ferrousforge.errors import InvalidModelName
from ferrousforge.store.catalog import CATALOG, lookup
from ferrousforge.store.names import ModelName, manifest_relpath, parse_name, sanitize


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("smollm2", "smollm2:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("SmolLM2:135M", "smollm2:135m"),
        ("me/my-model_v1.2:q4_k_m", "me/my-model_v1.2:q4_k_m"),
        ("library/gemma3", "gemma3:latest"),
        ("a" * 64, "a" * 64 + ":latest"),
    ],
)
def test_valid_names(raw, canonical):
    assert str(parse_name(raw)) == canonical


def test_parts():
    n = parse_name("Me/Model:Tag")
    assert (n.namespace, n.model, n.tag) == ("me", "model", "tag")
    assert parse_name(n) is n
    assert parse_name("x", default_tag="v1") == ModelName("x", "v1")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "my model",
        "model\n",
        "..",
        "../etc",
        "a/../b",
        "a..b",
        "a/b/c",
        "/abs",
        "a\\b",
        ".hidden",
        "-flag",
        "model:",
        "model:.x",
        "a:b:c",
        "ns/",
        "café",
        "a" * 65,
        "n" * 60 + "/" + "m" * 60 + ":" + "t" * 10,
    ],
)
def test_invalid_names(raw):
    with pytest.raises(InvalidModelName) as info:
        parse_name(raw)
    message = str(info.value)
    assert "\n" not in message and "letters, digits" in message


def test_manifest_relpath_stays_inside():
    assert manifest_relpath(parse_name("smollm2:135m")) == PurePosixPath(
        "manifests/library/smollm2/135m.json"
    )
    assert manifest_relpath(parse_name("me/x")) == PurePosixPath("manifests/me/x/latest.json")
    with pytest.raises(InvalidModelName):
        manifest_relpath(ModelName("..", "latest"))
    with pytest.raises(InvalidModelName):
        manifest_relpath(ModelName("x", "../../escape"))


@pytest.mark.parametrize(
    "stem, name",
    [
        ("SmolLM2-135M-Instruct.Q4_1", "smollm2-135m-instruct.q4_1"),
        ("my model (final)", "my-model-final"),
        ("..weird..name..", "weird.name"),
        ("___", "model"),
        ("x" * 100, "x" * 64),
    ],
)
def test_sanitize(stem, name):
    assert sanitize(stem) == name
    parse_name(sanitize(stem))


def test_catalog_lookup():
    assert lookup("smollm2") is CATALOG["smollm2:135m"]
    assert lookup("SMOLLM2:latest") is CATALOG["smollm2:135m"]
    assert lookup("gemma3") is CATALOG["gemma3:270m"]
    assert lookup("minilm:l6") is CATALOG["minilm:l6"]
    assert lookup("smollm2:7b") is None
    assert lookup("nothing") is None
    with pytest.raises(InvalidModelName):
        lookup("bad name")


def test_catalog_is_consistent():
    for key, entry in CATALOG.items():
        assert key == entry.name == str(parse_name(key))
        assert {s.kind for s in entry.sources} == {"pypi", "hf"}
        for source in entry.sources:
            if source.kind == "pypi":
                assert [p for p, _ in source.parts] == [f.path for f in entry.files]
        for f in entry.files:
            assert len(f.sha256) == 64 and f.size > 0
    gemma = CATALOG["gemma3:270m"].sources[0]
    assert gemma.kind == "pypi" and len(gemma.requirements) == 4
