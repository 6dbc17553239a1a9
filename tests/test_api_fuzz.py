"""Fuzzing with schemathesis over the whole OpenAPI schema, against a real server: zero 5xx
and zero answers that break their documented schema, with and without an API key.

The stateless phase sends generated requests to every operation. The stateful phase follows
the schema's links (a pull leads to show, copy and delete of what it stored), with pulls
drawn from real specs: loopback URLs of GGUF files, a file under ``pull_paths``, a redirect
to a private address. Catalog sources are off and URLs reach 127.0.0.1 only, so nothing
leaves the machine. Real llama.cpp runs the tiny model the fuzzer generates against.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import ferrousforge as ff

from .apiserver import running
from .conftest import FileServer, file_server
from .nullmodels import add_null_model
from .tinymodel import write_tiny_gguf

pytestmark = pytest.mark.slow
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
KEY = "fuzz-key"


@schemathesis.deserializer("application/x-ndjson")
def _ndjson(ctx: Any, response: Any) -> list[Any]:
    """NDJSON as the array of its lines, as the schema documents it."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


@dataclass
class Target:
    url: str
    specs: list[str]  # what the stateful phase pulls
    headers: dict[str, str]
    home: Path


@pytest.fixture(scope="module", params=["open", "with-key"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    home, allowed = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("allowed")
    tiny = write_tiny_gguf(allowed / "local.gguf")
    with ff.Engine(ff.Settings(home=home)) as engine:
        engine.pull(str(tiny), name="tiny")
    add_null_model(home, "echo:1", {})
    with file_server() as files:
        yield from _serve(request.param == "with-key", home, allowed, tiny, files)


def _serve(
    keyed: bool, home: Path, allowed: Path, tiny: Path, files: FileServer
) -> Iterator[Target]:
    data = tiny.read_bytes()
    specs = [files.add("/alpha.gguf", data), files.add("/beta.gguf", data + b"\0" * 32)]
    files.redirects["/lan.gguf"] = "http://10.0.0.9/model.gguf"  # refused before connecting
    specs += [files.url("/lan.gguf"), str(tiny), "echo:1"]
    s = ff.Settings(
        home=home,
        api_keys=[KEY] if keyed else [],
        pull_sources=[],
        pull_hosts=["127.0.0.1"],
        pull_private_hosts=["127.0.0.1"],
        pull_paths=[allowed],
        max_body_bytes=1 << 16,
        request_timeout=30,
        threads=1,
    )
    with running(s) as srv:
        headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
        yield Target(srv.url, specs, headers, home)


def load_schema(t: Target, *, pulls: list[str] | None = None) -> Any:
    raw = httpx.get(t.url + "/openapi.json", headers=t.headers).json()
    raw["servers"] = [{"url": t.url}]
    if pulls is not None:  # the stateful phase pulls real things, so its links lead somewhere
        body = raw["components"]["schemas"]["PullBody"]["properties"]
        body["model"] = {"type": "string", "enum": pulls}
        body["stream"] = {"type": "boolean", "enum": [False]}  # links read JSON answers
    return schemathesis.openapi.from_dict(raw)


def test_stateless_fuzz_finds_no_5xx_and_no_schema_violation(target: Target) -> None:
    schema = load_schema(target)
    cases = 0
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: Any) -> None:
            nonlocal cases
            cases += 1
            response = case.call(base_url=target.url, headers=target.headers, timeout=60)
            case.validate_response(response, checks=CHECKS)

        run()
        operations.append(f"{op.method.upper()} {op.path}")
    assert {"POST /api/generate", "POST /api/pull", "POST /api/copy", "DELETE /api/delete",
            "POST /v1/chat/completions", "POST /api/embed"} <= set(operations)  # fmt: skip
    assert cases >= 25 * len(operations)  # parameterless GETs have one case each
    _report(f"stateless fuzz ({(target.headers and 'with key') or 'open'}): {cases} cases over "
            f"{len(operations)} operations, no 5xx, no schema violation")  # fmt: skip
    assert httpx.get(target.url + "/health").status_code == 200


def test_stateful_fuzz_follows_links_from_pulls(target: Target) -> None:
    schema = load_schema(target, pulls=target.specs)
    steps: list[str] = []
    headers = target.headers

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": target.url, "headers": headers, "timeout": 60}

        def after_call(self, response: Any, case: Any) -> None:
            steps.append(f"{case.operation.method.upper()} {case.path} {response.status_code}")
            super().after_call(response, case)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,  # a fixed walk: a random one sometimes never reached a pull
            suppress_health_check=list(HealthCheck),
        )
    )
    followed = [s for s in steps if s.startswith(("POST /api/show", "POST /api/copy",
                                                  "DELETE /api/delete"))]  # fmt: skip
    pulled = [s for s in steps if s.startswith("POST /api/pull") and s.endswith(" 200")]
    assert pulled and followed, steps[:40]
    _report(f"stateful fuzz: {len(steps)} steps, {len(pulled)} pulls that stored a model, "
            f"{len(followed)} show/copy/delete calls, no 5xx")  # fmt: skip
    refused = httpx.post(target.url + "/api/pull", headers=headers,
                         json={"model": target.specs[2], "stream": False})  # fmt: skip
    assert refused.status_code == 403 and "may reach only 127.0.0.1" in refused.json()["error"]


def test_without_a_key_only_an_open_server_answers(target: Target) -> None:
    """Requests that send no key: 401 everywhere but the probes (/health, /ready) when the
    server has keys, and never 401 when it has none."""
    keyed = bool(target.headers)
    assert (httpx.get(target.url + "/openapi.json").status_code == 401) is keyed
    schema = load_schema(target)
    for result in schema.get_all_operations():
        op = result.ok()
        locked = keyed and op.path not in ("/health", "/ready")

        @given(case=op.as_strategy())
        @settings(max_examples=3, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: Any) -> None:
            response = case.call(base_url=target.url, timeout=30)
            # a generated path parameter no route matches (a newline, say) reaches no route
            unrouted = "{" in case.operation.path and response.status_code == 404
            unrouted = unrouted and '"Not Found"' in response.text
            assert unrouted or (response.status_code == 401) is locked, response.text  # noqa: B023
            case.validate_response(response, checks=CHECKS)

        run()


def _report(line: str) -> None:
    sys.stdout.write(line + "\n")  # the README quotes these figures (run with -s)
