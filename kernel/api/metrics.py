"""Prometheus metrics, fed through the plugin hooks (registered as the ``metrics`` entry point).

Every engine gets an instance, but only ``bind`` (by the HTTP app) creates its registry:
prometheus_client costs ~60 ms to import, which scripts and the CLI need not pay. Each
instance has its own registry, so two apps in one process never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..hooks import InferenceEvent, ModelEvent

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..engine import AsyncEngine

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RATE = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """Request, token and model metrics; ``bind`` adds the engine's live gauges."""

    def __init__(self) -> None:
        self.bound = False

    def bind(self, engine: AsyncEngine) -> None:
        """Create the registry and metrics, with live gauges read from ``engine``."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "forge_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "forge_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.ttft = Histogram(
            "forge_time_to_first_token_seconds",
            "time to the first token",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens_in = Counter(
            "forge_prompt_tokens", "prompt tokens evaluated", ["model"], registry=r
        )
        self.speed = Histogram(
            "forge_tokens_per_second",
            "generation speed per request",
            ["model"],
            buckets=_RATE,
            registry=r,
        )
        self.inferences = Counter(
            "forge_inferences", "finished inferences", ["model", "task", "outcome"], registry=r
        )
        self.loads = Counter("forge_model_loads", "model loads", ["model"], registry=r)
        self.unloads = Counter("forge_model_unloads", "model unloads", ["model"], registry=r)
        self.load_time = Histogram(
            "forge_model_load_seconds", "model load time", ["model"], buckets=_LATENCY, registry=r
        )
        Gauge("forge_queue_depth", "requests waiting for a model slot", registry=r).set_function(
            lambda: engine.scheduler.queued
        )
        r.register(_loaded_models(engine))
        self.bound = True

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    # -- hooks -----------------------------------------------------------------------

    def on_model_load(self, e: ModelEvent) -> None:
        if not self.bound:
            return
        self.loads.labels(e.name).inc()
        self.load_time.labels(e.name).observe(e.load_duration / 1e9)

    def on_model_unload(self, e: ModelEvent) -> None:
        if not self.bound:
            return
        self.unloads.labels(e.name).inc()

    def on_inference_end(self, e: InferenceEvent) -> None:
        if not self.bound:
            return
        outcome = "ok" if e.error is None else "cancelled" if e.error == "cancelled" else "error"
        self.inferences.labels(e.model, e.task, outcome).inc()
        if e.stats is None:
            return
        self.tokens_in.labels(e.model).inc(e.stats.prompt_eval_count)
        if e.first_token_ns:
            self.ttft.labels(e.model).observe(e.first_token_ns / 1e9)
        if e.stats.eval_count and e.stats.eval_duration:
            self.speed.labels(e.model).observe(e.stats.tokens_per_second)


def _loaded_models(engine: AsyncEngine) -> Any:
    """A collector of the loaded models and their memory, read from the engine at scrape."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class LoadedModels(Collector):
        def collect(self) -> Iterator[Metric]:
            rows = engine.ps()
            count = GaugeMetricFamily("forge_loaded_models", "models loaded now")
            count.add_metric([], len(rows))
            memory = GaugeMetricFamily(
                "forge_model_memory_bytes",
                "memory of each loaded model",
                labels=["model", "backend", "device"],
            )
            for m in rows:
                memory.add_metric([m.name, m.backend, m.device], m.memory)
            tokens = CounterMetricFamily("forge_generated_tokens", "tokens generated, live")
            tokens.add_metric([], engine.generated_tokens)
            yield from (count, memory, tokens)

    return LoadedModels()
