"""Answering one message: answer manifest (`claims`, succeeded answers) → job record → result
topic → offset done. Used by `intake` (rejections, cache hits, replays) and `batchrun`
(generated images, failures, dead letters).

The steps and their order are described in `results`; this module adds the worker's policy on
errors: a Redis failure costs deduplication by record, not the answer (counted and logged, the
result is still published, and the answer manifest still keeps one set of images per id); a
Kafka failure is not swallowed — the offset stays unfinished and the exception reaches `app`,
which stops the worker so that another one redelivers the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from imagegen_api.messages import DeadLetter, ErrorInfo, GenerationResult, ImageRef

from .claims import AnswerClaims
from .logs import fields
from .metrics import WorkerMetrics
from .results import JobRecords, ResultPublisher
from .stats import WorkerStats
from .storage import ObjectStore
from .validate import bounded_request
from .work import MessageRef

log = logging.getLogger(__name__)

Done = Callable[[MessageRef], None]


class Responder:
    def __init__(self, *, records: JobRecords, publisher: ResultPublisher, store: ObjectStore,
                 claims: AnswerClaims, done: Done, metrics: WorkerMetrics, stats: WorkerStats,
                 worker: str) -> None:
        self.records = records
        self.claims = claims
        self.publisher = publisher
        self.store = store
        self.done = done
        self.metrics = metrics
        self.stats = stats
        self.worker = worker

    async def answer(self, ref: MessageRef, result: GenerationResult) -> GenerationResult:
        """Claim, record, publish and release one message; returns the result published."""
        claimed = await self.claims.claim(result)
        winner = claimed
        try:
            winner = await self.records.finish(claimed, ref.source)
        except Exception as exc:
            self.metrics.redis_errors.labels("finish").inc()
            log.warning("job record not written, publishing anyway",
                        extra=fields(request_id=result.request_id, error=repr(exc)))
        if winner.request_id != result.request_id:
            # A rejection of a message whose id another message holds: answered under the
            # message's own id, so that it never overrides that message's answer.
            self.metrics.duplicates.labels("rejected_apart").inc()
            log.info("rejection answered under the message's own id", extra=fields(
                request_id=result.request_id, own_id=winner.request_id))
        elif winner is not result:
            # Another message's answer was first (job record or answer manifest): publish it.
            self.metrics.duplicates.labels("raced").inc()
            winner = self.refresh_urls(winner)
        await self._publish(ref, winner)
        self.metrics.requests.labels(winner.status, winner.tier or "").inc()
        self.metrics.total.labels(winner.tier or "").observe(winner.timings.total_ms / 1000)
        self.stats.answered(failed=winner.status == "failed")
        log.info("answered", extra=fields(
            request_id=winner.request_id, status=winner.status, tier=winner.tier,
            cache_hit=winner.cache_hit, total_ms=round(winner.timings.total_ms, 1),
            attempts=winner.attempts,
            error=winner.error.code if winner.error else None))
        return winner

    async def replay(self, ref: MessageRef, stored: GenerationResult) -> None:
        """Publish a stored terminal result again (a new message reusing a request id)."""
        await self._publish(ref, self.refresh_urls(stored))

    async def dead_letter(self, ref: MessageRef, result: GenerationResult,
                          error: ErrorInfo) -> GenerationResult:
        """Send the request to the dead-letter topic, then answer it as failed."""
        raw = bounded_request(ref.value)  # at most 64 KiB of the request
        await self.publisher.dead_letter(DeadLetter(
            request_id=result.request_id, request=raw, error=error, attempts=result.attempts,
            worker=self.worker, source=ref.source, failed_at=time.time(),
        ))
        self.metrics.dlq.inc()
        log.warning("dead-lettered", extra=fields(
            request_id=result.request_id, attempts=result.attempts, error=error.message))
        return await self.answer(ref, result)

    def refresh_urls(self, result: GenerationResult) -> GenerationResult:
        if not result.images:
            return result
        images = [
            ImageRef(**{**img.model_dump(), "url": self.store.presign(img.key)})
            for img in result.images
        ]
        return result.model_copy(update={"images": images})

    async def _publish(self, ref: MessageRef, result: GenerationResult) -> None:
        await self.publisher.publish(result)
        try:
            await self.records.mark_published(result.request_id)
        except Exception as exc:
            self.metrics.redis_errors.labels("published").inc()
            log.warning("could not mark the job record published",
                        extra=fields(request_id=result.request_id, error=repr(exc)))
        self.done(ref)
