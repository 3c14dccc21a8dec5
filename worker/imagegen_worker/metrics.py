"""Prometheus metrics of one worker, served by `server` at /metrics.

One object with its own registry (no global state, so tests build as many as they like); the
app, the batch runner and the cache record into it. Latencies are in seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)


class WorkerMetrics:
    """The worker's metric families, all prefixed `imagegen_`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "imagegen_requests", "Requests answered, by final status and tier",
            ["status", "tier"], registry=r,
        )
        self.queue_wait = Histogram(
            "imagegen_queue_wait_seconds", "Time a request waited in this worker's tier queue",
            ["tier"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.generate = Histogram(
            "imagegen_generate_seconds", "Pipeline time of one batch",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upload = Histogram(
            "imagegen_upload_seconds", "Encode and upload time of one request's images",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.total = Histogram(
            "imagegen_total_seconds", "Submission (or fetch) to result, per request",
            ["tier"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "imagegen_batch_size", "Images per pipeline call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r,
        )
        self.cache_hits = Counter(
            "imagegen_cache_hits", "Requests answered from the cache", registry=r
        )
        self.cache_misses = Counter(
            "imagegen_cache_misses", "Seeded requests the cache could not answer", registry=r
        )
        self.cache_errors = Counter(
            "imagegen_cache_errors", "Cache operations that failed (Redis unavailable)", registry=r
        )
        self.redis_errors = Counter(
            "imagegen_redis_errors", "Job record or heartbeat writes that failed",
            ["op"], registry=r,
        )
        self.storage_errors = Counter(
            "imagegen_storage_errors", "Answer manifest writes or reads that failed (claims)",
            ["op"], registry=r,
        )
        self.in_flight = Gauge(
            "imagegen_in_flight", "Requests fetched and not yet answered", registry=r
        )
        self.queued = Gauge(
            "imagegen_queued", "Requests waiting in this worker's tier queue",
            ["tier"], registry=r,
        )
        self.dlq = Counter(
            "imagegen_dlq", "Requests sent to the dead-letter topic", registry=r
        )
        self.retries = Counter(
            "imagegen_retries", "Failed generation attempts that will be retried", registry=r
        )
        self.duplicates = Counter(
            "imagegen_duplicates", "Requests whose id already had a terminal job record",
            ["action"], registry=r,
        )
        self.safety_blocked = Counter(
            "imagegen_safety_blocked_images", "Generated images the safety checker flagged "
            "(never stored)", registry=r,
        )
        self.safety_check = Histogram(
            "imagegen_safety_check_seconds", "Safety checker time of one batch",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.paused_tiers = Gauge(
            "imagegen_paused_tier", "1 while fetching of a tier is paused (backpressure)",
            ["tier"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
