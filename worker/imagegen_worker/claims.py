"""Answer manifests: "one request id, one set of images" even when the job store is unreachable.
Used by `respond` (before a succeeded answer is recorded) and `intake` (when the job record
cannot be read).

The job record in Redis is the idempotency memory, but generation goes on while Redis is down
(issue 17, the documented degradation). Then a second message for an id (a client's retry, a
redelivery) cannot learn the first one's answer, and regenerating gives other bytes: the same
seed in another batch size rounds differently. So every succeeded answer is also claimed in
object storage, next to its images, at `naming.answer_key` with an S3 conditional create: the
first answer stored wins, and a later one publishes the winner instead of its own images.

Best effort by design: when object storage fails too, the answer is published as it is (logged
and counted) — a worker never stops answering because this second memory is unavailable.
Manifests are small (one result JSON) and live under the pool's prefix, so the pool's storage
lifecycle removes them with the images.
"""

from __future__ import annotations

import logging

from imagegen_api import naming
from imagegen_api.messages import GenerationResult
from pydantic import ValidationError

from .logs import fields
from .metrics import WorkerMetrics
from .storage import ObjectStore

log = logging.getLogger(__name__)


class AnswerClaims:
    def __init__(self, store: ObjectStore, metrics: WorkerMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def key(self, request_id: str) -> str:
        return naming.answer_key(self.store.namespace, self.store.pool, request_id)

    async def claim(self, result: GenerationResult) -> GenerationResult:
        """The answer on record for `result.request_id`: `result` when it is the first succeeded
        one (or the claim cannot be made), else the first one's result."""
        if result.status != "succeeded" or not result.images:
            return result
        body = result.model_dump_json(exclude_none=True).encode()
        try:
            first = await self.store.claim(self.key(result.request_id), body)
        except Exception as exc:
            self.metrics.storage_errors.labels("claim").inc()
            log.warning("answer manifest not written, publishing this answer",
                        extra=fields(request_id=result.request_id, error=repr(exc)[:300]))
            return result
        if first is None:
            return result
        return self._parse(result.request_id, first) or result

    async def lookup(self, request_id: str) -> GenerationResult | None:
        """The claimed answer of an id, if any (None also when storage cannot be read)."""
        try:
            found = await self.store.get(self.key(request_id))
        except Exception as exc:
            self.metrics.storage_errors.labels("lookup").inc()
            log.warning("answer manifest unreadable", extra=fields(
                request_id=request_id, error=repr(exc)[:300]))
            return None
        return self._parse(request_id, found) if found is not None else None

    def _parse(self, request_id: str, raw: bytes) -> GenerationResult | None:
        try:
            stored = GenerationResult.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("answer manifest unreadable", extra=fields(
                request_id=request_id, error=str(exc)[:300]))
            return None
        return stored if stored.request_id == request_id else None
