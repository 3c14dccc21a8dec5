"""Making an answer durable in spite of failures: the worker's policy around `respond`.
Used by `intake` (rejections, replays, cache hits, dead letters) and `batchrun` (generated
images, expiries, failures); built by `wiring`.

- A Kafka outage (`outage.kafka_transient`) is retried with backoff, not-ready and fetching
  paused (`outage.Outages`), the model kept loaded: a broker blip costs latency, not a restart.
- A failure that retrying cannot mend — the answer cannot be serialised or recorded (a request
  id no encoder accepts, a result too large for the topic) — is never a process exit: the
  message is dead-lettered under a safe id naming its offset (`unanswerable:<topic:part:off>`),
  with a bounded copy of the request, and its offset is acknowledged.
- `outage.Abandoned` (stopping during an outage) goes up to `dispatch`: the offset stays
  unacknowledged for the next owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from imagegen_api.messages import DeadLetter, ErrorInfo, GenerationResult

from .faults import Faults
from .logs import fields
from .metrics import WorkerMetrics
from .outage import KAFKA, Abandoned, Outages, kafka_transient
from .respond import Responder
from .validate import bounded_request
from .work import MessageRef

log = logging.getLogger(__name__)

Ack = Callable[[MessageRef], None]


class Answers:
    def __init__(self, *, responder: Responder, outages: Outages, ack: Ack,
                 metrics: WorkerMetrics, worker: str, faults: Faults | None = None) -> None:
        self.responder = responder
        self.faults = faults or Faults()
        self.outages = outages
        self.ack = ack
        self.metrics = metrics
        self.worker = worker

    def presign(self, key: str) -> str:
        return self.responder.store.presign(key)

    async def answer(self, ref: MessageRef, result: GenerationResult) -> None:
        await self._durably(ref, lambda: self.responder.answer(ref, result))

    async def replay(self, ref: MessageRef, stored: GenerationResult) -> None:
        await self._durably(ref, lambda: self.responder.replay(ref, stored))

    async def dead_letter(self, ref: MessageRef, result: GenerationResult,
                          error: ErrorInfo) -> None:
        await self._durably(ref, lambda: self.responder.dead_letter(ref, result, error))

    async def _durably(self, ref: MessageRef, op: Callable[[], Awaitable[object]]) -> None:
        async def publish() -> object:
            self.faults.check_publish()
            return await op()

        try:
            await self.outages.retry(KAFKA, publish, transient=kafka_transient)
        except Abandoned:
            raise
        except Exception as exc:
            await self.unanswerable(ref, exc)

    async def unanswerable(self, ref: MessageRef, exc: BaseException) -> None:
        """Dead-letter a message whose answer cannot be made, under a safe id; ack it."""
        log.error("answer cannot be recorded or published: dead-lettering the message",
                  extra=fields(source=ref.source, error=repr(exc)[:500]))
        error = ErrorInfo(code="unanswerable",
                          message=f"the answer could not be published: "
                                  f"{type(exc).__name__}: {exc}"[:500],
                          field=None, limit=None)
        letter = DeadLetter(request_id=f"unanswerable:{ref.source}",
                            request=bounded_request(ref.value), error=error, attempts=0,
                            worker=self.worker, source=ref.source, failed_at=time.time())
        async def publish() -> None:
            self.faults.check_publish()
            await self.responder.publisher.dead_letter(letter)

        try:
            await self.outages.retry(KAFKA, publish, transient=kafka_transient)
        except Abandoned:
            raise
        except Exception as again:  # nothing more can be done for it; never stop the worker
            log.error("dead letter failed too: dropping the message",
                      extra=fields(source=ref.source, error=repr(again)[:500]))
        self.metrics.dlq.inc()
        self.ack(ref)
