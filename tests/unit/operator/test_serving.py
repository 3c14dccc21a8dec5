"""Images served and cache hit rate of the last hour, from heartbeat counters (serving.py)."""

from __future__ import annotations

from imagegen_api.messages import Heartbeat
from imagegen_operator import serving

H = 3600.0


def hb(worker: str, at: float, images: int, hits: int = 0, misses: int = 0,
       started: float = 0.0) -> Heartbeat:
    return Heartbeat(worker=worker, state="ready", ready=True, interval_seconds=5,
                     updated_at=at, started_at=started, images=images, cache_hits=hits,
                     cache_misses=misses)


def run(beats: list[list[Heartbeat]], times: list[float]) -> tuple[serving.Samples, serving.Served]:
    samples: serving.Samples = {}
    for now, batch in zip(times, beats, strict=True):
        samples = serving.record(samples, batch, now)
    return samples, serving.served(samples, times[-1])


def test_a_worker_born_in_the_window_counts_from_zero() -> None:
    _, s = run([[hb("a", 100, 10, hits=3, misses=1, started=50)]], [100])
    assert (s.images, s.cache_hits, s.cache_lookups) == (13, 3, 4)
    assert s.hit_rate == 0.75 and s.hit_rate_text() == "75%"


def test_an_older_worker_counts_from_its_first_sample_after_an_operator_restart() -> None:
    # Started 2 hours before the operator saw it: its first counters are history.
    t0 = 10 * H
    _, s = run([[hb("a", t0, 500, hits=50, misses=50, started=t0 - 2 * H)]], [t0])
    assert (s.images, s.cache_lookups, s.hit_rate_text()) == (0, 0, "-")
    _, s = run([[hb("a", t0, 500, 50, 50, t0 - 2 * H)], [hb("a", t0 + 120, 530, 60, 60,
                                                             t0 - 2 * H)]], [t0, t0 + 120])
    assert (s.images, s.cache_hits, s.cache_lookups) == (40, 10, 20)


def test_only_the_last_hour_counts() -> None:
    t0 = 10 * H
    beats, times = [], []
    for minute in range(0, 121):  # one image per minute for two hours, a hit every 2 minutes
        at = t0 + 60 * minute
        beats.append([hb("a", at, minute, hits=minute // 2, misses=minute - minute // 2,
                         started=t0 - 1)])
        times.append(at)
    samples, s = run(beats, times)
    assert s.images == 60 + 30  # 60 generated, 30 answered from the cache
    assert (s.cache_hits, s.cache_lookups) == (30, 60)
    assert len(samples["a"]) <= 62  # one sample a minute, one anchor


def test_a_restarted_process_and_a_gone_worker_still_count() -> None:
    t0 = 10 * H
    _, s = run([
        [hb("a", t0, 0, started=t0 - 10), hb("b", t0, 0, started=t0 - 10)],
        [hb("a", t0 + 60, 20, started=t0 - 10), hb("b", t0 + 60, 5, started=t0 - 10)],
        [hb("a", t0 + 120, 7, started=t0 + 100)],  # a restarted (counters reset), b gone
    ], [t0, t0 + 60, t0 + 120])
    assert s.images == 20 + 7 + 5


def test_frequent_heartbeats_keep_the_newest_value_without_growing() -> None:
    samples: serving.Samples = {}
    for i in range(100):  # every 5 s for 500 s
        samples = serving.record(samples, [hb("a", 5.0 * i, i, started=0)], 5.0 * i)
    assert len(samples["a"]) <= 10
    assert serving.served(samples, 495.0).images == 99


def test_the_figures_reach_the_status_and_are_kept_when_not_computed() -> None:
    from datetime import UTC, datetime

    from imagegen_api.specs import GenerationPoolSpec, GenerationPoolStatus
    from imagegen_operator.status import (
        PoolObservation,
        QueueObservation,
        RoleObservation,
        pool_status,
    )

    spec = GenerationPoolSpec.model_validate({"models": ["tiny"]})
    now = datetime.fromtimestamp(H, UTC)

    def status(served: serving.Served | None,
               old: GenerationPoolStatus | None = None) -> GenerationPoolStatus:
        return pool_status(spec, PoolObservation(
            generation=1, warm=RoleObservation(), cold=RoleObservation(),
            queue=QueueObservation(), served=served), old, now)

    st = status(serving.Served(images=1234, cache_hits=42, cache_lookups=100))
    wire = st.to_wire()
    assert (wire["imagesPerHour"], wire["cacheHitRate"], wire["cacheHitRatio"]) == (
        1234, "42%", 0.42)
    kept = status(None, st).to_wire()
    assert (kept["imagesPerHour"], kept["cacheHitRate"]) == (1234, "42%")
    none = status(serving.Served(images=0, cache_hits=0, cache_lookups=0)).to_wire()
    assert none["cacheHitRate"] == "-" and none.get("cacheHitRatio") is None
