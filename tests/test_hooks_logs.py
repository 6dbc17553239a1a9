"""Plugin hooks (entry points and direct), JSON logs with the request id, tools templates."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.api.app import create_app
from ferrousforge.api.logs import JsonFormatter
from ferrousforge.api.metrics import Metrics
from ferrousforge.hooks import Hooks, InferenceEvent, ModelEvent, current_request_id

from .nullmodels import add_null_model
from .tinymodel import CHATML, write_tiny_gguf


class Recorder:
    """A plugin implementing every hook."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_model_load(self, e: ModelEvent) -> None:
        self.events.append(("load", e))

    def on_model_unload(self, e: ModelEvent) -> None:
        self.events.append(("unload", e))

    def on_inference_start(self, e: InferenceEvent) -> None:
        self.events.append(("start", e))

    def on_inference_end(self, e: InferenceEvent) -> None:
        self.events.append(("end", e))


class Broken:
    def on_inference_start(self, e: InferenceEvent) -> None:
        raise RuntimeError("plugin bug")


def test_metrics_are_a_part_of_the_http_app_not_of_the_core(tmp_path: Path) -> None:
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path))
    assert not any(isinstance(p, Metrics) for p in engine.hooks.plugins)
    create_app(engine.settings, engine)
    assert sum(isinstance(p, Metrics) for p in engine.hooks.plugins) == 1
    code = (
        "import sys, ferrousforge as ff\n"
        f"ff.Engine(ff.Settings(home={str(tmp_path)!r})).close()\n"
        "sys.exit('prometheus_client' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


async def test_hooks_see_loads_inference_and_unloads(tmp_path: Path) -> None:
    add_null_model(tmp_path, "echo:1", {})
    rec = Recorder()
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path), hooks=Hooks([Broken(), rec]))
    token = current_request_id.set("req-42")
    try:
        await engine.generate("echo:1", "a b c")
        await engine.embed("echo:1", "x")
    finally:
        current_request_id.reset(token)
    await engine.unload("echo:1")
    kinds = [k for k, _ in rec.events]
    assert kinds == ["load", "start", "end", "start", "end", "unload"]
    end = rec.events[2][1]
    assert (end.model, end.task, end.request_id, end.error) == (
        "echo:1",
        "generate",
        "req-42",
        None,
    )
    assert end.stats.eval_count == 3 and end.first_token_ns > 0
    assert rec.events[0][1].load_duration > 0 and rec.events[0][1].backend == "null"
    await engine.close()


async def test_failed_and_cancelled_inference_reach_the_hooks(tmp_path: Path) -> None:
    add_null_model(tmp_path, "flaky:1", {"reply": "a b c", "fail_after": 1})
    add_null_model(tmp_path, "slow:1", {"reply": "a " * 100, "token_delay": 0.01})
    rec = Recorder()
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path), hooks=Hooks([rec]))
    with pytest.raises(ff.InferenceError):
        await engine.generate("flaky:1", "x")
    stream = engine.generate_stream("slow:1", "x")
    await anext(stream)
    await stream.aclose()
    ends = [e for k, e in rec.events if k == "end"]
    assert "failed after 1 tokens" in ends[0].error and ends[1].error == "cancelled"
    await engine.close()


def test_json_logs_carry_the_request_id() -> None:
    record = logging.LogRecord("ferrousforge.access", logging.INFO, "", 0, "GET %s", ("/x",), None)
    record.status = 200
    token = current_request_id.set("abc123")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        current_request_id.reset(token)
    assert line["message"] == "GET /x" and line["request_id"] == "abc123"
    assert line["status"] == 200 and line["level"] == "info" and line["time"].endswith("Z")


def test_tools_reach_a_template_that_uses_them(tmp_path: Path) -> None:
    template = "{% if tools %}TOOLS {{ tools | tojson }}\n{% endif %}" + CHATML
    gguf = write_tiny_gguf(tmp_path / "tools.gguf", chat_template=template)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    msgs = [{"role": "user", "content": "hi"}]
    with ff.Engine(ff.Settings(home=tmp_path / "home", threads=1)) as engine:
        engine.pull(str(gguf), name="tools")
        plain = engine.chat("tools", msgs, options={"max_tokens": 1})
        rendered = engine.chat("tools", msgs, tools=tools, options={"max_tokens": 1})
        expected = len(engine.tokenize("tools", "TOOLS " + json.dumps(tools) + "\n"))
        assert rendered.stats.prompt_eval_count >= plain.stats.prompt_eval_count + expected - 2


def test_opentelemetry_spans_for_requests_and_inference(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ferrousforge.api.app import create_app

    add_null_model(tmp_path, "echo:1", {})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = ff.AsyncEngine(ff.Settings(home=tmp_path))
    app = create_app(engine.settings, engine, tracer_provider=provider)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/api/generate", json={"model": "echo:1", "prompt": "a b", "stream": False})
        assert r.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "POST /api/generate" in spans
    inference = spans["forge.generate"]
    assert inference.attributes is not None
    assert inference.attributes["forge.model"] == "echo:1"
    assert inference.attributes["forge.generated_tokens"] == 2
