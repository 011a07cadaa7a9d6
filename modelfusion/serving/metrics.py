"""Prometheus metrics of one server: requests, errors, latency, batch sizes and queue depth.

Each app gets its own registry, so several apps in one process (tests, Ray replicas) never
share counters; ``GET /metrics`` renders it in the Prometheus text format. Under ``--workers N``
(``$PROMETHEUS_MULTIPROC_DIR`` set before the workers start, see ``modelfusion serve``) each
worker writes its values to files there and ``GET /metrics`` on any worker sums every worker's,
so a scrape never shows only the worker that happened to answer it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: The variable prometheus-client reads for its multi-process mode (one folder shared by the workers).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Request latency buckets in seconds: a fused graph answers in milliseconds, a queue adds some.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """The server's counters and histograms in their own ``prometheus_client`` registry.

    Examples
    --------
    >>> metrics = ServerMetrics()
    >>> metrics.observe_request("/predict", 200, 0.004)
    >>> b"modelfusion_requests_total" in metrics.render()[0]
    True
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelfusion_requests", "HTTP requests answered", ["path", "status"], registry=self.registry
        )
        self.errors = Counter(
            "modelfusion_request_errors",
            "Requests answered with a 4xx or 5xx",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelfusion_request_latency_seconds",
            "Time from receiving a request to answering it",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelfusion_batch_size", "Rows per model call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "modelfusion_batch_seconds",
            "Time of one model call",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelfusion_queue_depth",
            "Rows waiting for a model call",
            registry=self.registry,
            multiprocess_mode="livesum",  # every live worker's queue, added up
        )
        self._depth: Callable[[], float] | None = None

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)
        self.update_queue()

    def observe_batch(self, rows: int, seconds: float) -> None:
        """Record one model call of ``rows`` rows."""
        self.batch_size.observe(rows)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        self.update_queue()
        if not os.environ.get(MULTIPROCESS_ENV):
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined), CONTENT_TYPE_LATEST

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from ``depth()`` after every request and at every scrape."""
        self._depth = depth

    def update_queue(self) -> None:
        """Set the queue-depth gauge from the tracked queue (a callback gauge cannot span processes)."""
        if self._depth is not None:
            self.queue_depth.set(self._depth())


__all__ = ["ServerMetrics"]
