"""Running counters of one worker that its heartbeat reports: processed, failed, in flight,
images per second over a sliding window, median batch time.

Pure (clock injected); the app records into it, `heartbeat` reads a snapshot.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    processed: int
    failed: int
    in_flight: int
    images: int
    images_per_second: float
    batch_seconds_p50: float | None


class WorkerStats:
    def __init__(self, *, window_seconds: float = 60.0, batch_samples: int = 50,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self.clock = clock
        self.started = clock()
        self.processed = 0  # requests answered (any status)
        self.failed = 0  # requests answered failed (after their last attempt)
        self.in_flight = 0  # fetched, not answered
        self.images = 0  # images generated since start
        self._images: deque[tuple[float, int]] = deque()
        self._batches: deque[float] = deque(maxlen=batch_samples)

    def answered(self, *, failed: bool = False) -> None:
        self.processed += 1
        if failed:
            self.failed += 1

    def images_done(self, count: int) -> None:
        self._images.append((self.clock(), count))
        self.images += count

    def batch_done(self, seconds: float) -> None:
        self._batches.append(seconds)

    def images_per_second(self) -> float:
        now = self.clock()
        while self._images and self._images[0][0] < now - self.window:
            self._images.popleft()
        span = min(self.window, max(now - self.started, 1e-9))
        return sum(n for _, n in self._images) / span

    def snapshot(self) -> Snapshot:
        return Snapshot(
            processed=self.processed,
            failed=self.failed,
            in_flight=self.in_flight,
            images=self.images,
            images_per_second=round(self.images_per_second(), 4),
            batch_seconds_p50=(round(statistics.median(self._batches), 4)
                               if self._batches else None),
        )
