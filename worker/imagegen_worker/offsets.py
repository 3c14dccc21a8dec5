"""Offset bookkeeping for at-least-once delivery when messages finish out of order.

Pure; owned by `consumer`. Every fetched offset is `add`ed, and marked `done` once its result is
durable. What may be committed for a partition is the first offset still unfinished (or one past
the last fetched when all are done): a commit never skips work that has not finished, so a crash
redelivers exactly the unfinished messages (and maybe some finished ones after them, which the
job records deduplicate).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset fetched
    committed: int | None = None  # last offset committed (next to read)


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}

    def add(self, tp: P, offset: int) -> None:
        """A message was fetched and is now in this worker's hands."""
        part = self._parts.setdefault(tp, _Partition())
        part.pending.add(offset)
        if part.next_offset is None or offset + 1 > part.next_offset:
            part.next_offset = offset + 1

    def done(self, tp: P, offset: int) -> None:
        """Its result is durable; the offset may be committed once all before it are too."""
        part = self._parts.get(tp)
        if part is not None:
            part.pending.discard(offset)

    def is_pending(self, tp: P, offset: int) -> bool:
        part = self._parts.get(tp)
        return part is not None and offset in part.pending

    def committable(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Offsets to commit now (next offset to read), only where they advanced."""
        wanted = None if partitions is None else set(partitions)
        out: dict[P, int] = {}
        for tp, part in self._parts.items():
            if wanted is not None and tp not in wanted:
                continue
            if part.next_offset is None:
                continue
            position = min(part.pending) if part.pending else part.next_offset
            if part.committed is None or position > part.committed:
                out[tp] = position
        return out

    def committed(self, offsets: dict[P, int]) -> None:
        """Record a successful commit."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None and (part.committed is None or offset > part.committed):
                part.committed = offset

    def forget(self, partitions: Iterable[P]) -> list[int]:
        """Stop tracking partitions (revoked); returns the unfinished offsets left behind."""
        left: list[int] = []
        for tp in list(partitions):
            part = self._parts.pop(tp, None)
            if part is not None:
                left.extend(sorted(part.pending))
        return left

    def pending_count(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())

    def partitions(self) -> list[P]:
        return list(self._parts)
