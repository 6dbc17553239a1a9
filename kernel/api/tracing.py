"""OpenTelemetry tracing (extra ``otel``): a span per HTTP request, and one per inference
with its token counts, exported over OTLP/HTTP to ``otel_endpoint``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ..errors import MissingExtra
from ..hooks import InferenceEvent


def instrument(app: FastAPI, endpoint: str | None, provider: Any = None) -> Any:
    """Trace ``app``; spans go to ``endpoint`` unless a ``provider`` is given (tests)."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise MissingExtra("opentelemetry", "otel") from e
    if provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create({"service.name": "ferrousforge"}))
        exporter = OTLPSpanExporter(
            endpoint=endpoint.rstrip("/") + "/v1/traces" if endpoint else None
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="health,metrics"
    )
    return InferenceSpans(provider.get_tracer("ferrousforge"))


class InferenceSpans:
    """A hook plugin: one span per inference, from its start to its end event."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._open: dict[str, Any] = {}

    def on_inference_start(self, e: InferenceEvent) -> None:
        span = self.tracer.start_span(f"forge.{e.task}")
        span.set_attributes({"forge.model": e.model, "forge.request_id": e.request_id})
        self._open[e.request_id or str(id(span))] = span

    def on_inference_end(self, e: InferenceEvent) -> None:
        span = self._open.pop(e.request_id, None)
        if span is None:
            return
        if e.stats is not None:
            span.set_attributes(
                {
                    "forge.prompt_tokens": e.stats.prompt_eval_count,
                    "forge.generated_tokens": e.stats.eval_count,
                    "forge.time_to_first_token_ms": e.first_token_ns / 1e6,
                }
            )
        if e.error is not None:
            span.set_attribute("forge.error", e.error)
        span.end()
