"""Prometheus metrics on a registry owned by the app (never the global one), prefix `r2_`.

Labels are bounded and never carry secrets or request content: endpoint paths are the
gateway's own routes, models are configured deployment names, statuses are numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                   5, 10, 30, 60)
COST_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1)
TOKEN_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 2000, 4000, 8000, 16000)

CONTENT_TYPE = CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .embed_cache import EmbeddingCache
    from .pacing import Pacer


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: Workers (`r2 serve --workers`): values go to PROMETHEUS_MULTIPROC_DIR and a scrape
        #: of any worker sums them; gauges read at scrape time are polled instead (`refresh`).
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._polled: list[tuple[Gauge, Callable[[], float]]] = []
        r = self.registry
        self.requests = Counter("r2_requests_total", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.decisions = Counter("r2_decisions_total", "Routing decisions by model and budget",
                                 ["model", "budget"], registry=r)
        self.route_seconds = Histogram("r2_route_seconds", "Routing time (embed + decide)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.embed_seconds = Histogram("r2_embedding_seconds", "Embedding batch time",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.embed_batch = Histogram("r2_embedding_batch_size", "Texts per embedding batch",
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.stage_seconds = Histogram(
            "r2_stage_seconds", "Time per stage of routing: route_embed, route_count, "
            "route_score per request; embed_queue per embedded text; embed_tokenize, "
            "embed_onnx (the run, pooling included) per embedding batch", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.embed_cache_hits = Counter(
            "r2_embed_cache_hits_total", "Routing texts whose embedding came from the cache "
            "(stored, or joined one in flight)", registry=r)
        self.embed_cache_misses = Counter("r2_embed_cache_misses_total",
                                          "Routing texts the embedder had to embed", registry=r)
        self.upstream_seconds = Histogram("r2_upstream_seconds", "Upstream call time",
                                          ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("r2_upstream_errors_total",
                                       "Upstream errors by deployment and status",
                                       ["model", "status"], registry=r)
        self.predicted_cost = Counter("r2_predicted_cost_usd_total",
                                      "Sum of predicted cost of routed requests", ["model"],
                                      registry=r)
        self.actual_cost = Counter("r2_actual_cost_usd_total",
                                   "Sum of cost from upstream usage", ["model"], registry=r)
        self.completion_tokens = Histogram("r2_completion_tokens", "Completion tokens",
                                           ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.cut_at_budget = Counter("r2_budget_cut_total",
                                     "Responses cut at the budget (finish_reason=length)",
                                     ["model", "budget"], registry=r)
        self.fallbacks = Counter("r2_fallbacks_total", "Fallbacks by reason", ["reason"],
                                 registry=r)
        self.rejected = Counter("r2_rejected_total", "Requests shed by the concurrency limit",
                                registry=r)

    def add_pacing(self, pacer: Pacer) -> None:
        """Spend-pacing gauges, read from the controller at scrape time."""
        r = self.registry
        self.gauge("r2_pacing_tradeoff", "Default trade-off set by spend pacing",
                   lambda: pacer.current, "livemax")
        self.gauge("r2_pacing_spend_usd_per_hour", "Realised spend rate (smoothed over tau/4)",
                   pacer.spend_usd_per_hour, "livemax")
        Gauge("r2_pacing_target_usd_per_hour", "Spend target", registry=r,
              multiprocess_mode="livemax").set(pacer.target * 3600.0)
        self.gauge("r2_pacing_target_unreachable", "1: over target at the cheapest bound; -1: "
                   "under target at the dearest bound; 0: tracking",
                   lambda: pacer.unreachable, "livemax")

    def add_embed_cache(self, cache: EmbeddingCache) -> None:
        """Embedding-cache gauges, read from the cache at scrape time."""
        self.gauge("r2_embed_cache_entries", "Embeddings held by the cache",
                   lambda: len(cache), "livesum")
        self.gauge("r2_embed_cache_hit_ratio", "Hits over lookups since start-up",
                   cache.hit_ratio, "livemax")

    def gauge(self, name: str, doc: str, read: Callable[[], float], mode: str) -> None:
        """A gauge read at scrape time; with workers, polled by `refresh` and combined over
        the live workers by `mode` (prometheus-client's multiprocess modes)."""
        g = Gauge(name, doc, registry=self.registry, multiprocess_mode=mode)  # type: ignore[arg-type]
        if self.multiprocess:
            self._polled.append((g, read))
        else:
            g.set_function(read)

    def refresh(self) -> None:
        for g, read in self._polled:
            g.set(read())

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.refresh()
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
