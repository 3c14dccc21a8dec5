"""Load shedding, pure: is the pool's backlog more than it can serve within maxQueueSeconds?

estimated wait = backlog (requests queued in the tier topics, not yet consumed by the workers'
group) / throughput (Σ images per second of the pool's fresh worker heartbeats). A request
makes about one image (n > 1 is rare and makes the estimate optimistic, not refusing).

No measured throughput (no worker up yet, scale from zero) gives no estimate: the gateway
admits, since refusing would keep a cold pool cold. The caller refreshes the figures every few
seconds (backlog.py); deciding costs nothing per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    backlog: int  # requests waiting in the tier topics
    throughput: float  # requests (images) per second the pool serves now; 0: unknown

    @property
    def wait_seconds(self) -> float | None:
        if self.throughput <= 0:
            return None
        return self.backlog / self.throughput


@dataclass(frozen=True)
class Shed:
    refuse: bool
    wait_seconds: float | None
    retry_after_seconds: int  # Retry-After when refused: time for the excess to drain


def decide(load: Load | None, max_queue_seconds: float) -> Shed:
    """Refuse when the estimated wait exceeds the bound; Retry-After = the excess, ≥ 1 s."""
    wait = load.wait_seconds if load is not None else None
    if wait is None or wait <= max_queue_seconds:
        return Shed(False, wait, 0)
    return Shed(True, wait, max(1, math.ceil(wait - max_queue_seconds)))
