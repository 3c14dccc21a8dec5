"""Copies of a request id that another message is running (issue 17): parked, never generated.
Used by `batchrun` when `JobRecords.start` answers LEASE_HELD for an entry of its batch.

A parked copy has counted no attempt and holds no GPU time. It waits, reading the job record
every `poll_s`, until either
- the record is terminal: the copy is answered from it (`Answers.replay`, the same images as the
  holder's answer, its own offset acknowledged); or
- nobody holds the lease any more and there is no answer (the holder died, was revoked, or
  failed and will retry elsewhere): the copy goes back to `requeue`, which runs it if this
  worker still owns its message (and drops it otherwise: Kafka redelivers it to the owner).
A parked copy is never acknowledged without an answer, so a worker that stops while copies are
parked loses nothing: their offsets stay uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from imagegen_api.messages import GenerationResult

from .logs import fields
from .results import JobRecords
from .scheduler import Entry
from .work import MessageRef, Work

log = logging.getLogger(__name__)

POLL_S = 0.5


class Replayer(Protocol):
    async def replay(self, ref: MessageRef, stored: GenerationResult) -> None: ...


class Parking:
    def __init__(self, *, records: JobRecords, answers: Replayer,
                 requeue: Callable[[Entry[Work]], None], poll_s: float = POLL_S) -> None:
        self.records = records
        self.answers = answers
        self.requeue = requeue
        self.poll_s = poll_s
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def park(self, entry: Entry[Work]) -> None:
        work = entry.item
        log.info("request id is being generated for another message: waiting for its answer",
                 extra=fields(request_id=work.request_id, source=work.ref.source))
        task = asyncio.create_task(self._wait(entry), name=f"parked {work.ref.source}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop waiting (drain, shutdown): parked copies stay unacknowledged in Kafka."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _wait(self, entry: Entry[Work]) -> None:
        work = entry.item
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                peek = await self.records.peek(work.request_id, work.ref.source)
            except Exception as exc:  # the record cannot be read: run it rather than wait blind
                log.warning("job record unreadable while parked: running the copy",
                            extra=fields(request_id=work.request_id, error=repr(exc)))
                self.requeue(entry)
                return
            if peek.result is not None:
                try:
                    await self.answers.replay(work.ref, peek.result)
                except Exception as exc:  # stopping during an outage: left to Kafka
                    log.warning("parked copy not answered: its message goes back to Kafka",
                                extra=fields(request_id=work.request_id, error=repr(exc)))
                return
            if not peek.held:
                self.requeue(entry)
                return
