"""The gateway's Prometheus metrics, on a registry of its own (one per app, no globals):
requests by route and status, latency by route, rejections by reason, requests waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    rejected: Counter
    in_flight: Gauge


def new_metrics() -> Metrics:
    reg = CollectorRegistry()
    return Metrics(
        registry=reg,
        requests=Counter("imagegen_gateway_requests", "HTTP requests answered",
                         ["route", "status"], registry=reg),
        latency=Histogram("imagegen_gateway_request_seconds", "HTTP request latency",
                          ["route"], registry=reg,
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)),
        rejected=Counter("imagegen_gateway_rejected", "Requests refused before Kafka",
                         ["reason"], registry=reg),
        in_flight=Gauge("imagegen_gateway_waiting", "Synchronous requests awaiting a result",
                        registry=reg),
    )
