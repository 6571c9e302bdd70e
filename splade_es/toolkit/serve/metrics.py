"""What ``GET /metrics`` reports, in the Prometheus text format: requests by route and status,
their latency, and the encoder's batches (how full, how long), so an operator sees whether
batching pays and where the time goes.

Each service has its own registry (not the process-wide default), so two services in one
process, as in the tests, count separately.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

# Seconds: a static query on a local engine answers in about a millisecond, a 7B encoder on CPU in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("splade_es_requests", "HTTP requests answered, by route and status code.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("splade_es_request_seconds", "Time to answer a request, by route.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_texts = Histogram("splade_es_encode_batch_texts", "Texts per encoder call.",
                                     buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("splade_es_encode_batch_seconds", "Time of one encoder call.",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, texts: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
