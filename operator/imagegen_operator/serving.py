"""What a pool served in the last hour: images and cache hit rate, from the counters workers
report in their heartbeats (images generated, cache hits, cache misses since the process
started). Pure: pool_plan keeps the samples between passes and puts the figures in the status.

Like Prometheus' ``increase()``: per worker process, the increase of each counter between
samples in the window. Edge cases handled on purpose:

* A process that started inside the window (a new pod, or a restarted one: another
  ``started_at``) counts from zero, so a worker that came and went within the hour still counts.
* A process that started before the window counts from its newest sample at or before the
  window's start; without one (the operator restarted less than an hour ago) from its first
  sample seen, so after an operator restart the figures count from the restart.
* Workers gone (no fresh heartbeat) keep their samples until these leave the window.
* A worker is sampled at most once per ``SAMPLE_SECONDS``: memory stays ~60 samples a worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from imagegen_api.messages import Heartbeat

WINDOW_SECONDS = 3600.0
SAMPLE_SECONDS = 60.0


@dataclass(frozen=True)
class Sample:
    at: float  # the heartbeat's updated_at
    started_at: float  # the worker process's start: another value is another process
    images: int
    cache_hits: int
    cache_misses: int

    @classmethod
    def of(cls, hb: Heartbeat) -> Sample:
        return cls(hb.updated_at, hb.started_at, hb.images, hb.cache_hits, hb.cache_misses)


Samples = Mapping[str, tuple[Sample, ...]]  # worker → samples, oldest first


@dataclass(frozen=True)
class Served:
    images: int  # images generated in the window, plus requests answered from the cache
    cache_hits: int
    cache_lookups: int  # hits + misses

    @property
    def hit_rate(self) -> float | None:
        """Share of cache lookups answered from the cache; None without lookups."""
        return self.cache_hits / self.cache_lookups if self.cache_lookups else None

    def hit_rate_text(self) -> str:
        """``42%`` for the printer column, ``-`` without lookups."""
        rate = self.hit_rate
        return "-" if rate is None else f"{rate * 100:.0f}%"


def record(samples: Samples, heartbeats: Iterable[Heartbeat], now: float,
           window: float = WINDOW_SECONDS,
           every: float = SAMPLE_SECONDS) -> dict[str, tuple[Sample, ...]]:
    """The samples with these heartbeats, pruned to the window (one anchor kept before it)."""
    out = {worker: list(seq) for worker, seq in samples.items()}
    for hb in heartbeats:
        seq = out.setdefault(hb.worker, [])
        new = Sample.of(hb)
        last = seq[-1] if seq else None
        if last is None or new.started_at != last.started_at or new.at - last.at >= every:
            seq.append(new)
        elif len(seq) > 1 and seq[-2].started_at == new.started_at and \
                new.at - seq[-2].at < every:
            seq[-1] = new  # keep the newest value without growing the list
        elif new.at > last.at:
            seq.append(new)
    start = now - window
    pruned: dict[str, tuple[Sample, ...]] = {}
    for worker, seq in out.items():
        while len(seq) > 1 and seq[1].at <= start:
            seq.pop(0)
        if seq and seq[-1].at > start:
            pruned[worker] = tuple(seq)
    return pruned


def served(samples: Samples, now: float, window: float = WINDOW_SECONDS) -> Served:
    """Images and cache figures of the window, summed over worker processes."""
    start = now - window
    images = hits = misses = 0
    for seq in samples.values():
        prev: Sample | None = None
        for s in seq:
            if prev is not None and prev.started_at == s.started_at:
                base = prev
            elif s.started_at >= start:
                base = Sample(s.started_at, s.started_at, 0, 0, 0)  # a process born in the window
            else:
                base = s  # first sight of an older process: count from here
            if s.at > start:
                images += max(0, s.images - base.images) + max(0, s.cache_hits - base.cache_hits)
                hits += max(0, s.cache_hits - base.cache_hits)
                misses += max(0, s.cache_misses - base.cache_misses)
            prev = s
    return Served(images=images, cache_hits=hits, cache_lookups=hits + misses)
