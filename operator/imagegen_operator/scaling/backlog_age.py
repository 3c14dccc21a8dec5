"""How long the oldest waiting request of each tier has waited, from offsets alone. Pure.

The lag reader sees offsets, not message timestamps. Each pass remembers, per partition, when
its end offset was seen to move: ``(seen at, end offset)`` samples. The oldest pending message
of a partition is the one at ``end - lag``; it was produced before the first sample whose end
offset passed it, so ``now - that sample's time`` is its age, low by at most one poll interval
(never high: the policy wakes spot capacity no earlier than the promise allows).

Edge cases handled on purpose:

* Fresh operator (or a backlog older than the samples kept): the age counts from the oldest
  sample, a lower bound that grows by itself; after a restart a patient tier waits at most its
  threshold again before it may wake the cold pool.
* An end offset going backwards (topic recreated): that partition's samples start over.
* Samples older than ``keep`` seconds are dropped except the newest of them, so memory stays
  bounded by the number of distinct end offsets seen in the window.

Called by pool_plan each pass; the ages feed the policy (scaling/policy.py), the status and the
``imagegen_pool_queue_oldest_seconds`` gauge.
"""

from __future__ import annotations

from collections.abc import Mapping

from .lag import LagSnapshot, TopicPartition

# (seen at, end offset), oldest first.
Samples = tuple[tuple[float, int], ...]
EndHistory = Mapping[TopicPartition, Samples]


def record_ends(history: EndHistory, lag: LagSnapshot, now: float,
                keep: float) -> dict[TopicPartition, Samples]:
    """The history with this pass's end offsets; partitions no longer read are forgotten."""
    out: dict[TopicPartition, Samples] = {}
    for p in lag.partitions:
        seq = list(history.get(p.key, ()))
        if seq and p.end_offset < seq[-1][1]:
            seq = []
        if not seq or seq[-1][1] != p.end_offset:
            seq.append((now, p.end_offset))
        while len(seq) > 1 and seq[1][0] <= now - keep:
            seq.pop(0)
        out[p.key] = tuple(seq)
    return out


def oldest_ages(history: EndHistory, lag: LagSnapshot, now: float) -> dict[str, float]:
    """Seconds the oldest pending request of each tier has waited (0 for a tier without
    backlog). Call after record_ends for the same snapshot."""
    ages = {t.tier: 0.0 for t in lag.tiers}
    for p in lag.partitions:
        if p.lag <= 0:
            continue
        first = p.first_pending
        produced = next((at for at, end in history.get(p.key, ()) if end > first), now)
        ages[p.tier] = max(ages.get(p.tier, 0.0), now - produced)
    return ages
