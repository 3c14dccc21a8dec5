"""Running one batch: attempts → pipeline → encode and upload → cache → answers. Driven by
`dispatch`'s GPU loop, in two halves so that uploads overlap the next batch: `generate` (the GPU
part, one `ModelRunner.generate` call in a thread) and `deliver` (per request: encode, upload,
store in the cache, answer).

Safety (`safety`, the pool's spec.safety.checker): the generate half scores every image right
after the pipeline; the delivery half answers a request with a flagged image `blocked` before
anything of it is encoded, uploaded or cached.

Failures: only the pipeline (or encoding its pixels) costs attempts. Every request of a failed
batch has used one attempt (counted in its job record when the attempt started, so a worker that
dies mid-batch counts too). Below `max_attempts` it is queued again to run alone (a poison
request cannot sink its neighbours twice; a request redelivered after a crash runs alone too, see
`dispatch.enqueue`); at the limit it goes to the dead-letter topic and is answered `failed`.
An upload that fails is an outage of storage, not of the request: it is retried with backoff
(`outage.Outages`: not ready, fetching paused) without generating again or counting an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from imagegen_api.messages import ErrorInfo, GenerationResult, ImageRef, Timings
from imagegen_api.specs import OutputFormat
from imagegen_api.workerconfig import WorkerConfig
from PIL import Image

from . import cachekey
from .cache import CachedImage, ImageCache
from .content_credentials import ContentCredentials
from .delivery import Answers
from .encode import Encoded, encode
from .faults import Faults
from .intake import Intake
from .jobs import draw_seeds, image_jobs
from .leases import Parking
from .logs import fields
from .metrics import WorkerMetrics
from .outage import STORAGE, Outages
from .results import LEASE_HELD, JobRecords
from .safety import SafetyChecker, Verdict, blocked_error, decide, flagged_count
from .scheduler import Batch, Entry
from .stats import WorkerStats
from .storage import ObjectStore
from .work import Runner, Work

log = logging.getLogger(__name__)

Requeue = Callable[[Entry[Work]], None]


@dataclass
class Generated:
    """A batch whose pixels exist and whose answers do not yet."""

    entries: list[Entry[Work]]
    images: list[list[Image.Image]]  # per entry, in seed order
    runner: Runner
    started_at: float  # wall clock, generation start
    generate_s: float
    verdicts: list[list[Verdict]] | None = None  # per entry, per image: the safety checker's


class BatchRunner:
    def __init__(self, *, config: WorkerConfig, runners: Mapping[str, Runner],
                 records: JobRecords, cache: ImageCache, store: ObjectStore,
                 answers: Answers, outages: Outages, intake: Intake, metrics: WorkerMetrics,
                 stats: WorkerStats, faults: Faults, requeue: Requeue,
                 clock: Callable[[], float] = time.monotonic,
                 checker: SafetyChecker | None = None,
                 credentials: ContentCredentials | None = None) -> None:
        self.config = config
        self.runners = runners
        self.records = records
        self.cache = cache
        self.store = store
        self.answers = answers
        self.outages = outages
        self.intake = intake
        self.metrics = metrics
        self.stats = stats
        self.faults = faults
        self.requeue = requeue
        self.clock = clock
        self.credentials = credentials  # signs a C2PA manifest into each image when set
        self.checker = checker  # spec.safety.checker: scores every image before delivery
        self.max_attempts = config.kafka.max_attempts
        # Copies of an id another message is running: not generated, answered from its record.
        self.parking = Parking(records=records, answers=answers, requeue=requeue)

    # --- the GPU half ------------------------------------------------------------------------

    async def generate(self, batch: Batch[Work]) -> Generated | None:
        now_mono = self.clock()
        for e in batch.entries:
            self.metrics.queue_wait.labels(e.tier).observe(max(0.0, now_mono - e.enqueued_at))

        entries = [e for e in batch.entries if not await self._expired(e.item)]
        if not entries:
            return None
        held = await self._start([e.item for e in entries])
        runnable: list[Entry[Work]] = []
        for e in entries:
            if e.item in held:
                self.parking.park(e)
            elif e.item.attempts > self.max_attempts:
                await self.intake.give_up(e.item, self._exhausted(e.item, "earlier attempts"))
            else:
                runnable.append(e)
        if not runnable:
            return None

        works = [e.item for e in runnable]
        runner = self.runners[works[0].request.model]
        for w in works:
            if w.seeds is None:
                w.seeds = draw_seeds(w.request, namespace=self.config.namespace,
                                     pool=self.config.pool)
        jobs = [job for w in works for job in image_jobs(w.request, w.seeds or [])]
        started_at = time.time()
        t0 = time.perf_counter()
        try:
            if self.faults.delay_generate:
                await asyncio.sleep(self.faults.delay_generate)
            self.faults.check_prompts([w.request.prompt for w in works])
            images = await asyncio.to_thread(runner.generate, jobs)
            if len(images) != len(jobs):
                raise RuntimeError(f"pipeline returned {len(images)} images for {len(jobs)} jobs")
            generate_s = time.perf_counter() - t0
            verdicts = await self._check(images)
        except Exception as exc:
            log.warning("batch failed", extra=fields(
                requests=[w.request_id for w in works], error=repr(exc)))
            await self.failed(runnable, exc)
            return None
        self.metrics.generate.observe(generate_s)
        self.metrics.batch_size.observe(len(jobs))
        self.stats.batch_done(generate_s)
        self.stats.images_done(len(jobs))
        log.info("batch generated", extra=fields(
            tier=batch.tier, promoted=batch.promoted, requests=len(works), images=len(jobs),
            generate_s=round(generate_s, 4)))

        per_work: list[list[Image.Image]] = []
        per_verdicts: list[list[Verdict]] = []
        i = 0
        for w in works:
            n = len(w.seeds or [])
            per_work.append(images[i:i + n])
            if verdicts is not None:
                per_verdicts.append(verdicts[i:i + n])
            i += n
        return Generated(runnable, per_work, runner, started_at, generate_s,
                         per_verdicts if verdicts is not None else None)

    async def _check(self, images: list[Image.Image]) -> list[Verdict] | None:
        """The safety checker's verdicts on the batch (None without a checker). Raises like the
        pipeline does: a batch whose images cannot be checked is not delivered."""
        if self.checker is None:
            return None
        t0 = time.perf_counter()
        verdicts = await asyncio.to_thread(self.checker.check, images)
        self.metrics.safety_check.observe(time.perf_counter() - t0)
        flagged = flagged_count(verdicts, self.checker.threshold)
        if flagged:
            self.metrics.safety_blocked.inc(flagged)
        return verdicts

    # --- the delivery half -------------------------------------------------------------------

    async def deliver(self, gen: Generated) -> None:
        verdicts: list[list[Verdict] | None] = (
            list(gen.verdicts) if gen.verdicts is not None else [None] * len(gen.entries))
        await asyncio.gather(*(
            self._deliver_one(gen, entry, images, checked)
            for entry, images, checked in zip(gen.entries, gen.images, verdicts, strict=True)
        ))

    async def _deliver_one(self, gen: Generated, entry: Entry[Work], images: list[Image.Image],
                           verdicts: list[Verdict] | None = None) -> None:
        work = entry.item
        request = work.request
        seeds = work.seeds or []
        if verdicts is not None and self.checker is not None:
            flag = decide(verdicts, seeds, self.checker.threshold)
            if flag is not None:  # nothing of it is encoded, stored or cached
                await self._blocked(gen, work, blocked_error(
                    flag, images=len(images),
                    flagged=flagged_count(verdicts, self.checker.threshold),
                    threshold=self.checker.threshold, source=self.checker.source))
                return
        t0 = time.perf_counter()
        try:
            encoded = await asyncio.gather(*(
                self._encode(work, gen.runner, img, seed)
                for img, seed in zip(images, seeds, strict=True)
            ))
        except Exception as exc:
            log.warning("encoding failed", extra=fields(request_id=work.request_id,
                                                        error=repr(exc)))
            await self.failed([entry], exc)
            return
        refs = await asyncio.gather(*(
            self._upload(img, seed, enc)
            for img, seed, enc in zip(images, seeds, encoded, strict=True)
        ))
        upload_s = time.perf_counter() - t0
        self.metrics.upload.observe(upload_s)

        if request.seed is not None and self.cache.enabled:
            digests = cachekey.request_keys(request, model_revision=gen.runner.revision) or []
            await self.cache.put_many([
                (d, CachedImage(key=r.key, sha256=r.sha256, size=size, seed=r.seed,
                                width=r.width, height=r.height,
                                format=cast(OutputFormat, r.format)))
                for d, (r, size) in zip(digests, refs, strict=True)
            ])

        now = time.time()
        result = GenerationResult(
            request_id=work.request_id,
            status="succeeded",
            images=[r for r, _ in refs],
            cache_hit=False,
            timings=Timings(
                queue_ms=_ms(gen.started_at - work.origin),
                generate_ms=_ms(gen.generate_s),
                upload_ms=_ms(upload_s),
                total_ms=_ms(now - work.origin),
            ),
            worker=self.answers.worker,
            model=request.model,
            model_revision=gen.runner.revision,
            tier=work.tier,
            attempts=work.attempts,
            finished_at=now,
            warnings=list(request.warnings),
        )
        await self.answers.answer(work.ref, result)

    async def _blocked(self, gen: Generated, work: Work, error: ErrorInfo) -> None:
        log.info("blocked after generation", extra=fields(
            request_id=work.request_id, reason=error.reason, score=error.score))
        now = time.time()
        await self.answers.answer(work.ref, GenerationResult(
            request_id=work.request_id, status="blocked", error=error,
            timings=Timings(queue_ms=_ms(gen.started_at - work.origin),
                            generate_ms=_ms(gen.generate_s), total_ms=_ms(now - work.origin)),
            worker=self.answers.worker, model=work.request.model,
            model_revision=gen.runner.revision, tier=work.tier, attempts=work.attempts,
            finished_at=now, warnings=list(work.request.warnings)))

    async def _encode(self, work: Work, runner: Runner, image: Image.Image,
                      seed: int) -> Encoded:
        request = work.request
        params = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "steps": request.steps,
            "guidance": request.guidance,
            "sampler": request.sampler,
            "seed": seed,
            "model": request.model,
            "model_revision": runner.revision,
            "adapters": [{"name": n, "weight": w} for n, w in request.loras] or None,
            "request_id": work.request_id,
        }
        return await asyncio.to_thread(encode, image, request.output_format, params,
                                       quality=request.quality, mark=request.watermark,
                                       credentials=self.credentials)

    async def _upload(self, image: Image.Image, seed: int, enc: Encoded) -> tuple[ImageRef, int]:
        """Upload (content-addressed, so a retry rewrites the same object) until it works."""
        key = self.store.key_for(enc.sha256, enc.format)
        await self.outages.retry(
            STORAGE, lambda: self.store.upload(key, enc.data, enc.content_type))
        ref = ImageRef(key=key, url=self.store.presign(key), width=image.width,
                       height=image.height, seed=seed, sha256=enc.sha256, format=enc.format)
        return ref, len(enc.data)

    # --- failures ----------------------------------------------------------------------------

    async def failed(self, entries: list[Entry[Work]], exc: BaseException) -> None:
        for e in entries:
            work = e.item
            if work.attempts >= self.max_attempts:
                await self.intake.give_up(work, ErrorInfo(
                    code="generation_failed",
                    message=f"attempt {work.attempts} of {self.max_attempts} failed: "
                            f"{type(exc).__name__}: {exc}"[:1000],
                    field=None, limit=f"maxAttempts={self.max_attempts}"))
            else:
                self.metrics.retries.inc()
                log.info("will retry alone", extra=fields(
                    request_id=work.request_id, attempt=work.attempts,
                    max_attempts=self.max_attempts))
                self.requeue(e)

    def _exhausted(self, work: Work, why: str) -> ErrorInfo:
        return ErrorInfo(code="max_attempts_exceeded",
                         message=f"{work.attempts - 1} {why} did not finish",
                         field=None, limit=f"maxAttempts={self.max_attempts}")

    async def _expired(self, work: Work) -> bool:
        deadline = work.request.deadline
        now = time.time()
        if deadline is None or deadline > now:
            return False
        result = GenerationResult(
            request_id=work.request_id, status="expired",
            error=ErrorInfo(code="deadline_exceeded",
                            message="deadline passed while the request was queued",
                            field="deadline", limit="in the future"),
            timings=Timings(queue_ms=_ms(now - work.origin), total_ms=_ms(now - work.origin)),
            worker=self.answers.worker, model=work.request.model, tier=work.tier,
            attempts=work.attempts, finished_at=now,
        )
        await self.answers.answer(work.ref, result)
        return True

    async def _start(self, works: list[Work]) -> list[Work]:
        """Lease and count the attempts; the works whose id another message holds (nothing
        counted for them: they are parked)."""
        try:
            attempts = await self.records.start([w.request_id for w in works],
                                                [w.tier for w in works],
                                                [w.ref.source for w in works])
        except Exception as exc:
            self.metrics.redis_errors.labels("start").inc()
            log.warning("job records unavailable, counting attempts locally",
                        extra=fields(error=repr(exc)))
            attempts = [w.attempts + 1 for w in works]
        held = [w for w, a in zip(works, attempts, strict=True) if a == LEASE_HELD]
        for w, a in zip(works, attempts, strict=True):
            if a != LEASE_HELD:
                w.attempts = a
        return held


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)
