"""The operator's Prometheus metrics, on a registry owned by the running operator."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter("imagegen_operator_reconciles", "Reconcile passes",
                                  ["kind", "result"], registry=r)
        self.reconcile_seconds = Histogram("imagegen_operator_reconcile_seconds",
                                           "Duration of one reconcile pass", ["kind"],
                                           registry=r)
        self.lag_read_seconds = Histogram(
            "imagegen_operator_lag_read_seconds", "Time to read a pool's consumer lag",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.scale_events = Counter("imagegen_operator_scale_events",
                                    "Replica changes decided by the autoscaler",
                                    ["namespace", "pool", "role", "direction"], registry=r)
        self.pool_lag = Gauge("imagegen_pool_queue_lag", "Consumer lag per tier",
                              ["namespace", "pool", "tier"], registry=r)
        self.pool_desired = Gauge("imagegen_pool_desired_replicas", "Desired workers",
                                  ["namespace", "pool", "role"], registry=r)
        self.pool_ready = Gauge("imagegen_pool_ready_replicas", "Ready workers",
                                ["namespace", "pool", "role"], registry=r)
        self.pool_oldest = Gauge(
            "imagegen_pool_queue_oldest_seconds",
            "Seconds the oldest pending request of a tier has waited",
            ["namespace", "pool", "tier"], registry=r)
        self.pool_max_wait = Gauge(
            "imagegen_pool_tier_max_wait_seconds", "A tier's promised maxWaitSeconds",
            ["namespace", "pool", "tier"], registry=r)
        self.pool_max = Gauge("imagegen_pool_max_replicas", "warm/cold maxReplicas of the spec",
                              ["namespace", "pool", "role"], registry=r)
        self.pool_queue_metrics = Gauge(
            "imagegen_pool_queue_metrics_available",
            "1 while the pool's consumer lag is readable (QueueMetricsAvailable), else 0",
            ["namespace", "pool"], registry=r)
        self.pool_stalled = Gauge(
            "imagegen_pool_stalled_partitions",
            "Partitions whose backlog does not move while workers are ready",
            ["namespace", "pool"], registry=r)
        self.pool_throughput = Gauge("imagegen_pool_throughput_images_per_minute",
                                     "Images per minute from fresh worker heartbeats",
                                     ["namespace", "pool"], registry=r)

    def forget_pool(self, namespace: str, pool: str) -> None:
        for gauge, extra in ((self.pool_desired, ("warm", "cold")),
                             (self.pool_ready, ("warm", "cold")),
                             (self.pool_max, ("warm", "cold"))):
            for role in extra:
                try:
                    gauge.remove(namespace, pool, role)
                except KeyError:
                    pass
        for per_pool in (self.pool_throughput, self.pool_queue_metrics, self.pool_stalled):
            try:
                per_pool.remove(namespace, pool)
            except KeyError:
                pass
        # Per-tier series of this pool, whatever its tiers were.
        for gauge in (self.pool_lag, self.pool_oldest, self.pool_max_wait):
            for metric in gauge.collect():
                for sample in metric.samples:
                    labels = sample.labels
                    if labels.get("namespace") == namespace and labels.get("pool") == pool:
                        try:
                            gauge.remove(namespace, pool, labels["tier"])
                        except KeyError:
                            pass
