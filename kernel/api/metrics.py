"""Prometheus metrics: a part of the HTTP app (``create_app`` adds them to the engine's
hooks), so scripts and the CLI never import prometheus_client (~60 ms). Events arrive
through the hooks; the live gauges read the engine's ``stats()`` at each scrape. Each
instance has its own registry, so two apps in one process never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..engine import EngineStats
from ..hooks import InferenceEvent, ModelEvent

if TYPE_CHECKING:
    from prometheus_client.core import Metric

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RATE = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """Request, token and model metrics, and live gauges read from ``stats``."""

    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

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
        r.register(_live(stats))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    # -- hooks -----------------------------------------------------------------------

    def on_model_load(self, e: ModelEvent) -> None:
        self.loads.labels(e.name).inc()
        self.load_time.labels(e.name).observe(e.load_duration / 1e9)

    def on_model_unload(self, e: ModelEvent) -> None:
        self.unloads.labels(e.name).inc()

    def on_inference_end(self, e: InferenceEvent) -> None:
        outcome = "ok" if e.error is None else "cancelled" if e.error == "cancelled" else "error"
        self.inferences.labels(e.model, e.task, outcome).inc()
        if e.stats is None:
            return
        self.tokens_in.labels(e.model).inc(e.stats.prompt_eval_count)
        if e.first_token_ns:
            self.ttft.labels(e.model).observe(e.first_token_ns / 1e9)
        if e.stats.eval_count and e.stats.eval_duration:
            self.speed.labels(e.model).observe(e.stats.tokens_per_second)


def _live(stats: Callable[[], EngineStats]) -> Any:
    """A collector of the engine's live numbers, read at each scrape."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class Live(Collector):
        def collect(self) -> Iterator[Metric]:
            now = stats()
            queue = GaugeMetricFamily("forge_queue_depth", "requests waiting for a model slot")
            queue.add_metric([], now.queued)
            count = GaugeMetricFamily("forge_loaded_models", "models loaded now")
            count.add_metric([], len(now.loaded))
            memory = GaugeMetricFamily(
                "forge_model_memory_bytes",
                "memory of each loaded model",
                labels=["model", "backend", "device"],
            )
            for m in now.loaded:
                memory.add_metric([m.name, m.backend, m.device], m.memory)
            tokens = CounterMetricFamily("forge_generated_tokens", "tokens generated, live")
            tokens.add_metric([], now.generated_tokens)
            yield from (queue, count, memory, tokens, *_batching(now))

    return Live()


def _batching(now: EngineStats) -> Iterator[Metric]:
    """Slots, running sequences, KV cells, batch widths and prompt-cache hits per model:
    the labels stay bounded (models, cell states, widths up to a model's sequences)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    slots = GaugeMetricFamily("forge_slots", "requests a model serves at once", labels=["model"])
    running = GaugeMetricFamily(
        "forge_running_sequences", "sequences in a model's batches now", labels=["model"]
    )
    kv = GaugeMetricFamily(
        "forge_kv_cells", "KV cache cells by state (llama.cpp)", labels=["model", "state"]
    )
    batches = CounterMetricFamily(
        "forge_batches", "decode steps or forward passes", labels=["model"]
    )
    widths = CounterMetricFamily(
        "forge_batch_width", "batches by the requests they carried", labels=["model", "width"]
    )
    hits = CounterMetricFamily(
        "forge_prompt_cache_hits", "requests that reused a cached prompt", labels=["model"]
    )
    reused = CounterMetricFamily(
        "forge_prompt_cache_tokens", "prompt tokens reused, not evaluated", labels=["model"]
    )
    for name, o in now.occupancy.items():
        slots.add_metric([name], o.slots)
        running.add_metric([name], o.running)
        if o.kv_total:
            free = o.kv_total - o.kv_used - o.kv_cached
            for state, cells in (("used", o.kv_used), ("cached", o.kv_cached), ("free", free)):
                kv.add_metric([name, state], cells)
        batches.add_metric([name], o.batches)
        for width, n in sorted(o.widths.items()):
            widths.add_metric([name, str(width)], n)
        hits.add_metric([name], o.cache_hits)
        reused.add_metric([name], o.cached_tokens)
    yield from (slots, running, kv, batches, widths, hits, reused)
