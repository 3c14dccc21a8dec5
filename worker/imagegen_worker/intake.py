"""Intake: what happens to a fetched message before the GPU sees it. Called by `dispatch` for
every record the consumer returns; the answer is either "handled here" (None) or a Work to queue.

In order: validate (rejected / expired / blocked → answered), deduplicate by request id against
the job record (terminal → skipped or replayed, see `results`; the record unreadable → against
the answer manifest, see `claims`), give up on a request whose
attempts are used up (workers died on it → dead letter), look every image up in the cache
(all hit → answered with cache_hit, no GPU).

Validation runs in a thread: counting a prompt's tokens is CPU work (a long prompt takes a
while) that must not stall the event loop, where the consumer's heartbeats and the GPU loop run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Mapping
from dataclasses import replace

from imagegen_api.messages import ErrorInfo, GenerationResult, ImageRef, Timings
from imagegen_api.workerconfig import WorkerConfig

from . import cachekey, control, initimage, validate
from .cache import ImageCache
from .claims import AnswerClaims
from .delivery import Answers
from .jobs import compat_key
from .logs import fields
from .metrics import WorkerMetrics
from .results import Existing, JobRecords
from .work import MessageRef, Runner, Work

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, *, config: WorkerConfig, runners: Mapping[str, Runner],
                 tier_of: Mapping[str, str], records: JobRecords, claims: AnswerClaims,
                 cache: ImageCache, answers: Answers, metrics: WorkerMetrics,
                 worker: str, fetch_object: initimage.Fetch | None = None) -> None:
        self.config = config
        self.fetch_object = fetch_object  # init images named by S3 key (ObjectStore.read_head)
        self.claims = claims
        self.runners = runners
        self.tier_of = tier_of
        self.records = records
        self.cache = cache
        self.answers = answers
        self.metrics = metrics
        self.worker = worker

    def count_tokens(self, model: str, text: str) -> int:
        return self.runners[model].count_tokens(text)

    def prompt_window(self, model: str) -> int:
        return self.runners[model].prompt_window()

    async def handle(self, ref: MessageRef) -> Work | None:
        fetched_at = time.time()
        tier = self.tier_of.get(ref.topic) or ref.topic.rsplit(".", 1)[-1]
        outcome = await asyncio.to_thread(self._validate, ref, tier, fetched_at)
        if isinstance(outcome, validate.Rejection):
            # Read only: a rejection must not claim the id (results: rejections never win).
            existing = await self._existing(outcome.request_id, tier, queue=False)
            if existing is not None and existing.terminal:
                await self._duplicate(ref, existing)
            else:
                await self._reject(ref, outcome, fetched_at)
            return None
        request, key = outcome
        work = Work(request=request, ref=ref, compat_key=key, fetched_at=fetched_at)

        existing = await self._existing(work.request_id, tier)
        if existing is not None and existing.terminal:
            await self._duplicate(ref, existing)
            return None
        if existing is None and await self._answered_before(ref, work.request_id):
            return None
        if existing is not None:
            work.attempts = existing.attempts
        if work.attempts >= self.config.kafka.max_attempts:
            await self.give_up(work, ErrorInfo(
                code="max_attempts_exceeded",
                message=f"{work.attempts} attempts started and none finished "
                        "(workers stopped while generating it)",
                field=None, limit=f"maxAttempts={self.config.kafka.max_attempts}"))
            return None

        if await self._answer_from_cache(work):
            return None
        return work

    def _validate(self, ref: MessageRef, tier: str, now: float
                  ) -> validate.Rejection | tuple[validate.ValidRequest, Hashable]:
        """Validation, and the batching key; a message that breaks either is rejected rather
        than crashing the worker (which would redeliver it to the next one, forever)."""
        fallback = f"invalid:{ref.source}"
        try:
            outcome = validate.validate(ref.value, key=ref.key, tier=tier, config=self.config,
                                        count_tokens=self.count_tokens, now=now,
                                        prompt_window=self.prompt_window,
                                        fallback_id=fallback)
            if isinstance(outcome, validate.Rejection):
                return outcome
            if outcome.init is not None:
                resolved = self._resolve_init(outcome, tier)
                if isinstance(resolved, validate.Rejection):
                    return resolved
                outcome = resolved
            if outcome.control is not None:
                controlled = self._resolve_control(outcome, tier)
                if isinstance(controlled, validate.Rejection):
                    return controlled
                outcome = controlled
            return outcome, compat_key(outcome)
        except Exception as exc:
            log.exception("request could not be validated", extra=fields(source=ref.source))
            key = (ref.key or b"").decode("utf-8", "replace")
            rid = key if validate.is_request_id(key) else fallback
            return validate.Rejection(
                request_id=rid, status="rejected", tier=tier,
                error=ErrorInfo(code="invalid_request",
                                message=f"request could not be processed: {exc}"[:500],
                                field=None, limit=None))

    def _resolve_init(self, request: validate.ValidRequest, tier: str
                      ) -> validate.ValidRequest | validate.Rejection:
        """Fetch and decode the init image and mask (blocking: runs in the validation thread)."""
        assert request.init is not None
        spec = self.config.model(request.model)
        max_pixels = spec.limits.max_pixels if spec is not None else 0

        def no_store(key: str, limit: int) -> bytes | None:
            raise initimage.InputError("init_image.s3_key", "this worker has no object store",
                                       "b64 only")

        try:
            cond, width, height = initimage.resolve(
                request.init, width=request.width, height=request.height,
                max_pixels=max_pixels, fetch=self.fetch_object or no_store)
        except initimage.InputError as exc:
            return validate.Rejection(
                request_id=request.request_id, status="rejected", tier=tier, model=request.model,
                error=ErrorInfo(code=exc.code, message=str(exc)[:validate.MAX_ERROR_MESSAGE],
                                field=exc.field, limit=exc.limit))
        return replace(request, width=width, height=height, conditioning=cond)

    def _resolve_control(self, request: validate.ValidRequest, tier: str
                         ) -> validate.ValidRequest | validate.Rejection:
        """Fetch and decode the control image (blocking: runs in the validation thread)."""
        assert request.control is not None
        spec = self.config.model(request.model)
        max_pixels = spec.limits.max_pixels if spec is not None else 0

        def no_store(key: str, limit: int) -> bytes | None:
            raise initimage.InputError("control.image.s3_key", "this worker has no object "
                                       "store", "b64 only")

        try:
            image = control.resolve(request.control, width=request.width,
                                    height=request.height, max_pixels=max_pixels,
                                    fetch=self.fetch_object or no_store)
        except initimage.InputError as exc:
            return validate.Rejection(
                request_id=request.request_id, status="rejected", tier=tier, model=request.model,
                error=ErrorInfo(code=exc.code, message=str(exc)[:validate.MAX_ERROR_MESSAGE],
                                field=exc.field, limit=exc.limit))
        runner = self.runners.get(request.model)
        prepare = getattr(runner, "prepare_controlnet", None)
        if prepare is not None:
            try:  # here, not in the GPU loop: only this request waits for the load
                prepare(request.control.name)
            except Exception:  # the batch tries again and fails with attempts counted
                log.exception("ControlNet %s of model %s could not be loaded",
                              request.control.name, request.model)
        return replace(request, control_image=image)

    async def give_up(self, work: Work, error: ErrorInfo) -> None:
        """Dead-letter a request and answer it as failed (also used by `batchrun`)."""
        now = time.time()
        result = GenerationResult(
            request_id=work.request_id, status="failed", error=error,
            timings=Timings(total_ms=_ms(now - work.origin)), worker=self.worker,
            model=work.request.model, model_revision=self.runners[work.request.model].revision,
            tier=work.tier, attempts=work.attempts, finished_at=now,
        )
        await self.answers.dead_letter(work.ref, result, error)

    async def _reject(self, ref: MessageRef, rejection: validate.Rejection,
                      fetched_at: float) -> None:
        now = time.time()
        result = GenerationResult(
            request_id=rejection.request_id, status=rejection.status, error=rejection.error,
            timings=Timings(total_ms=_ms(now - fetched_at)), worker=self.worker,
            model=rejection.model, tier=rejection.tier, attempts=0, finished_at=now,
        )
        await self.answers.answer(ref, result)

    async def _existing(self, request_id: str, tier: str, *, queue: bool = True
                        ) -> Existing | None:
        try:
            return await self.records.intake(request_id, tier, queue=queue)
        except Exception as exc:
            self.metrics.redis_errors.labels("intake").inc()
            log.warning("job record unavailable, cannot deduplicate",
                        extra=fields(request_id=request_id, error=repr(exc)))
            return None

    async def _answered_before(self, ref: MessageRef, request_id: str) -> bool:
        """With the job record unreadable, the answer manifest (`claims`) still knows whether
        the id was answered: replay that answer instead of generating other images."""
        stored = await self.claims.lookup(request_id)
        if stored is None:
            return False
        self.metrics.duplicates.labels("replayed").inc()
        log.info("request id answered before (answer manifest), publishing it again",
                 extra=fields(request_id=request_id))
        await self.answers.replay(ref, stored)
        return True

    async def _duplicate(self, ref: MessageRef, existing: Existing) -> None:
        assert existing.result is not None
        if existing.published and existing.source == ref.source:
            # Redelivery of a message already answered (the worker died before committing).
            self.metrics.duplicates.labels("skipped").inc()
            self.answers.ack(ref)
            return
        self.metrics.duplicates.labels("replayed").inc()
        log.info("request id already answered, publishing its result again",
                 extra=fields(request_id=existing.result.request_id))
        await self.answers.replay(ref, existing.result)

    async def _answer_from_cache(self, work: Work) -> bool:
        if not self.cache.enabled:
            return False
        request = work.request
        runner = self.runners[request.model]
        digests = cachekey.request_keys(request, model_revision=runner.revision)
        if digests is None:
            return False
        entries = await self.cache.get_many(digests)
        if entries is None:
            return False
        if not all(entries):
            self.metrics.cache_misses.inc()
            return False
        self.metrics.cache_hits.inc()
        now = time.time()
        images = [
            ImageRef(key=e.key, url=self.answers.presign(e.key), width=e.width,
                     height=e.height, seed=e.seed, sha256=e.sha256, format=e.format)
            for e in entries if e is not None
        ]
        result = GenerationResult(
            request_id=request.request_id, status="succeeded", images=images, cache_hit=True,
            timings=Timings(queue_ms=_ms(work.fetched_at - work.origin),
                            total_ms=_ms(now - work.origin)),
            worker=self.worker, model=request.model, model_revision=runner.revision,
            tier=work.tier, attempts=work.attempts, finished_at=now,
            warnings=list(request.warnings),
        )
        await self.answers.answer(work.ref, result)
        return True


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)
