"""Fuzzing with schemathesis, driven by the app's own OpenAPI schema: no 5xx, no crash.

Bounded: a fixed number of examples per operation, on null models (no real runtime).
``/api/pull`` is left out: fuzzed URLs would be downloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

import ferrousforge as ff
from ferrousforge.api.app import create_app

from .nullmodels import add_null_model


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("fuzz")
    add_null_model(home, "echo:1", {})
    engine = ff.AsyncEngine(ff.Settings(home=home, max_body_bytes=1 << 16))
    app = create_app(engine.settings, engine)
    schema: Any = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.app_metrics = app.state.metrics  # to count what the fuzzer sent
    yield schema


def test_no_server_errors(api_schema: Any) -> None:
    checked = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/pull":
            continue

        @given(case=op.as_strategy())
        @settings(
            max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_5xx(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )

        no_5xx()
        checked.append(op.path)
    assert {"/api/generate", "/api/chat", "/v1/chat/completions", "/api/embed"} <= set(checked)
    sent = sum(
        s.value
        for m in api_schema.app_metrics.requests.collect()
        for s in m.samples
        if s.name == "forge_requests_total"
    )
    assert sent >= 10 * len(checked)
