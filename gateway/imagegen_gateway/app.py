"""The FastAPI application of one pool's gateway: routes, authentication, rate limits, and the
runtime (Kafka producer, results fan-out, Redis, HTTP session for b64_json) started and stopped
with the app's lifespan. `create_app` is called by `main` and by the tests.

Every refusal (bad body, unknown model, size the model refuses, wrong content type, oversized
body, missing or unknown key, tier not allowed, rate limit) is answered in OpenAI's error shape
before anything is produced to Kafka.

Job records are per key: before producing, the gateway writes the submitting key's name into
the request's job record (`owner`); GET /v1/generations/{id} answers that key only, and any
other key gets the same 404 as an unknown id (a 403 would confirm that the id exists). A
client-chosen `request_id` that is already another key's (or a job submitted not through a
gateway) is refused with 409 before anything is written or produced: the worker would answer
it from the other job's record.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from imagegen_api import naming
from imagegen_api.messages import GenerationResult, JobRecord
from imagegen_api.workerconfig import WorkerConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import delivery, shedding, webhooks
from . import keys as keyring
from . import metrics as metrics_mod
from . import requests as reqs
from .backlog import BacklogMonitor
from .fanout import ResultFanout
from .ratelimit import RateLimiter
from .settings import GatewaySettings

log = logging.getLogger(__name__)

# KEYS[1] job record; ARGV key name, TTL. The record's owner after the call: ARGV[1] when it was
# free (or already this key's), another key's name, or '' for a record no gateway wrote.
_CLAIM_OWNER = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then return owner end
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return ARGV[1]
"""


@dataclass
class Runtime:
    """Connections the routes use; set by the lifespan, None before start and after stop."""

    producer: AIOKafkaProducer | None = None
    fanout: ResultFanout | None = None
    jobs: aioredis.Redis | None = None
    limits: aioredis.Redis | None = None
    limiter: RateLimiter | None = None
    http: aiohttp.ClientSession | None = None
    backlog: BacklogMonitor | None = None
    webhooks: delivery.Deliverer | None = None
    started: bool = False


def _error(exc: reqs.GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(settings: GatewaySettings, pool: WorkerConfig, keys: keyring.KeyRing) -> FastAPI:
    rt = Runtime()
    m = metrics_mod.new_metrics()
    bootstrap = settings.bootstrap(pool)
    client_id = f"imagegen-gateway-{pool.pool}-{uuid.uuid4().hex[:8]}"
    allow = webhooks.AllowList.parse(settings.webhook_allowed_hosts)
    policy = delivery.Policy(
        allow=allow, max_attempts=settings.webhook_max_attempts,
        backoff_seconds=settings.webhook_backoff_seconds,
        backoff_max_seconds=settings.webhook_backoff_max_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        ttl_seconds=settings.accepted_ttl_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rt.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id,
                                       acks="all", enable_idempotence=True, linger_ms=1,
                                       max_request_size=naming.MAX_MESSAGE_BYTES)
        rt.fanout = ResultFanout(bootstrap, pool.kafka.results_topic, client_id=client_id)
        rt.jobs = aioredis.from_url(settings.jobs_redis(pool))
        rt.limits = aioredis.from_url(settings.cache_redis(pool))
        rt.limiter = RateLimiter(rt.limits)
        rt.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        # Heartbeats live in the pool's Redis (the workers' records client), not the job store.
        rt.backlog = BacklogMonitor(bootstrap, pool, rt.limits, client_id=client_id,
                                    refresh_seconds=settings.backlog_refresh_seconds)
        rt.webhooks = delivery.Deliverer(bootstrap, pool, rt.jobs, keys, policy,
                                         client_id=client_id)
        try:
            await rt.producer.start()
            await rt.fanout.start(await rt.producer.partitions_for(pool.kafka.results_topic))
            await rt.backlog.start({t: await rt.producer.partitions_for(t)
                                    for t in pool.kafka.tier_topics.values()})
            await rt.webhooks.start()
            rt.started = True
            yield
        finally:
            rt.started = False
            await rt.webhooks.stop()
            await rt.backlog.stop()
            await rt.fanout.stop()
            await rt.producer.stop()
            await rt.http.close()
            await rt.jobs.aclose()
            await rt.limits.aclose()

    app = FastAPI(title=f"imagegen gateway: {pool.namespace}/{pool.pool}", lifespan=lifespan)
    app.state.runtime = rt
    app.state.metrics = m

    @app.middleware("http")
    async def observe(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.monotonic()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        m.requests.labels(path, str(response.status_code)).inc()
        m.latency.labels(path).observe(time.monotonic() - start)
        return response

    @app.exception_handler(reqs.GatewayError)
    async def gateway_error(_: Request, exc: reqs.GatewayError) -> JSONResponse:
        if exc.status < 500 or exc.code == "overloaded":
            m.rejected.labels(exc.code).inc()
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(reqs.GatewayError(exc.status_code, str(exc.detail), code="not_found"
                                        if exc.status_code == 404 else "http_error"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(reqs.GatewayError(400, str(exc.errors()[0].get("msg")),
                                        code="invalid_request"))

    # --- helpers -----------------------------------------------------------------------------

    def authenticate(request: Request) -> keyring.ApiKey:
        token = keyring.bearer(request.headers.get("authorization"))
        if token is None:
            raise reqs.GatewayError(401, "no API key: send Authorization: Bearer <key>",
                                    code="missing_api_key", kind="authentication_error")
        key = keys.lookup(token)
        if key is None:
            raise reqs.GatewayError(401, "unknown API key", code="invalid_api_key",
                                    kind="authentication_error")
        return key

    async def read_body(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise reqs.GatewayError(415, f"content type must be application/json, got "
                                    f"{ctype or 'none'!r}", code="unsupported_media_type")
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise reqs.GatewayError(413, f"body of {length} bytes exceeds the limit of "
                                    f"{limit} bytes", code="body_too_large")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise reqs.GatewayError(413, f"body exceeds the limit of {limit} bytes",
                                        code="body_too_large")
        return raw

    async def admit(request: Request) -> tuple[keyring.ApiKey, reqs.Planned]:
        """Authenticate, parse, check, authorise the tier and take a token: or refuse."""
        key = authenticate(request)
        body = reqs.parse_body(await read_body(request))
        planned = reqs.plan(body, pool, request_id=f"gw-{uuid.uuid4().hex[:20]}",
                            now=time.time())
        if not key.allows(planned.tier):
            raise reqs.GatewayError(403, f"key {key.name!r} may not use tier "
                                    f"{planned.tier!r} (allowed: {', '.join(sorted(key.tiers))})",
                                    param="tier", code="tier_not_allowed",
                                    kind="permission_error")
        webhook = planned.request.webhook
        if webhook is not None:
            if key.webhook_secret is None:
                raise reqs.GatewayError(400, f"key {key.name!r} has no webhookSecret to sign "
                                        "webhooks with (keys Secret)", param="webhook",
                                        code="webhook_not_configured")
            try:
                await delivery.check_submit(webhook, allow)
            except webhooks.WebhookRefused as exc:
                raise reqs.GatewayError(400, str(exc), param="webhook",
                                        code="webhook_refused") from None
        assert rt.backlog is not None
        shed = shedding.decide(rt.backlog.load, settings.max_queue_seconds)
        if shed.refuse:
            raise reqs.GatewayError(
                503, f"pool {pool.pool} is overloaded: estimated wait "
                f"{shed.wait_seconds:.0f}s exceeds {settings.max_queue_seconds:g}s "
                "(maxQueueSeconds)", code="overloaded", kind="server_error",
                headers={"Retry-After": str(shed.retry_after_seconds)})
        assert rt.limiter is not None
        decision = await rt.limiter.take(
            naming.rate_limit_key(pool.namespace, pool.pool, key.name),
            rate=key.rate_per_second or settings.rate_per_second,
            burst=key.burst or settings.burst)
        if not decision.allowed:
            raise reqs.GatewayError(429, f"rate limit of key {key.name!r} reached; retry in "
                                    f"{decision.retry_after_seconds}s", code="rate_limit_exceeded",
                                    kind="rate_limit_error",
                                    headers={"Retry-After": str(decision.retry_after_seconds)})
        return key, planned

    async def record_owner(request_id: str, key: keyring.ApiKey) -> None:
        """The submitting key's name into the job record, before anything is written or
        produced (the worker adds its fields to the same hash later); without it the job could
        not be read back, so a job store that does not answer refuses the request. An id
        already owned by another key, or by no gateway, is a 409."""
        assert rt.jobs is not None
        job = naming.job_key(pool.namespace, pool.pool, request_id)
        try:
            raw = await rt.jobs.eval(_CLAIM_OWNER, 1, job, key.name,
                                     settings.accepted_ttl_seconds)
        except aioredis.RedisError as exc:
            raise reqs.GatewayError(503, f"job store unavailable: {type(exc).__name__}",
                                    code="unavailable", kind="server_error",
                                    headers={"Retry-After": "5"}) from None
        owner = raw.decode() if isinstance(raw, bytes) else str(raw)
        if owner != key.name:
            raise reqs.GatewayError(409, f"request_id {request_id!r} is already in use; "
                                    "choose another", param="request_id",
                                    code="request_id_in_use")

    async def produce(planned: reqs.Planned) -> None:
        if rt.producer is None or not rt.started:
            raise reqs.GatewayError(503, "gateway not connected to Kafka", code="unavailable",
                                    kind="server_error", headers={"Retry-After": "5"})
        req = planned.request
        await rt.producer.send_and_wait(
            naming.tier_topic(pool.namespace, pool.pool, planned.tier),
            value=req.to_bytes(), key=req.request_id.encode())

    async def b64_images(result: GenerationResult) -> list[str]:
        assert rt.http is not None
        out = []
        for img in result.images:
            async with rt.http.get(img.url) as resp:
                if resp.status != 200:
                    raise reqs.GatewayError(502, f"image {img.key} could not be read from "
                                            f"storage (HTTP {resp.status})",
                                            code="storage_error", kind="server_error")
                out.append(base64.b64encode(await resp.read()).decode())
        return out

    # --- routes ------------------------------------------------------------------------------

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> JSONResponse:
        key, planned = await admit(request)
        assert rt.fanout is not None and rt.jobs is not None
        rid = planned.request.request_id
        await record_owner(rid, key)
        if planned.request.webhook is not None:  # also called when the caller timed out
            await delivery.register(rt.jobs, pool, rid, planned.request.webhook, key.name,
                                    settings.accepted_ttl_seconds)
        fut = rt.fanout.expect(rid)
        m.in_flight.inc()
        try:
            await produce(planned)
            try:
                async with asyncio.timeout(settings.sync_timeout_seconds):
                    result = await asyncio.shield(fut)
            except TimeoutError:
                raise reqs.GatewayError(
                    504, f"no result within {settings.sync_timeout_seconds:g}s; the request "
                    f"stays queued: GET /v1/generations/{rid}", code="timeout",
                    kind="timeout_error", headers={"X-Request-Id": rid}) from None
        finally:
            m.in_flight.dec()
            rt.fanout.forget(rid)
        err = reqs.result_error(result)
        if err is not None:
            raise err
        b64 = await b64_images(result) if planned.response_format == "b64_json" else None
        return JSONResponse(reqs.images_response(result, b64), headers={"X-Request-Id": rid})

    @app.post("/v1/generations", status_code=202)
    async def generations(request: Request) -> JSONResponse:
        key, planned = await admit(request)
        rid = planned.request.request_id
        assert rt.jobs is not None
        await record_owner(rid, key)
        if planned.request.webhook is not None:  # before producing: a fast result finds it
            await delivery.register(rt.jobs, pool, rid, planned.request.webhook, key.name,
                                    settings.accepted_ttl_seconds)
        await produce(planned)
        with contextlib.suppress(aioredis.RedisError):  # the record is the truth; this is a hint
            await rt.jobs.set(naming.accepted_key(pool.namespace, pool.pool, rid),
                              planned.tier, ex=settings.accepted_ttl_seconds)
        return JSONResponse({"id": rid, "object": "generation", "state": "queued",
                             "tier": planned.tier, "model": planned.request.model,
                             "queue": queue_view(rt.backlog.load if rt.backlog else None)},
                            status_code=202, headers={"Location": f"/v1/generations/{rid}"})

    @app.get("/v1/generations/{request_id}")
    async def generation(request_id: str, request: Request) -> JSONResponse:
        key = authenticate(request)
        assert rt.jobs is not None
        not_found = reqs.GatewayError(404, f"no generation {request_id!r} in pool {pool.pool}",
                                      param="id", code="not_found")
        raw = cast(dict[bytes, bytes], await rt.jobs.hgetall(
            naming.job_key(pool.namespace, pool.pool, request_id)))
        if owner_of(raw) != key.name:  # another key's, not the gateway's, or unknown: alike
            raise not_found
        hook = await delivery.view(rt.jobs, pool, request_id)
        extra = {"webhook": hook} if hook is not None else {}
        record = worker_record(raw)
        if record is not None:
            return JSONResponse(job_view(record) | extra)
        tier = await rt.jobs.get(naming.accepted_key(pool.namespace, pool.pool, request_id))
        if tier is not None:
            return JSONResponse({"id": request_id, "object": "generation", "state": "queued",
                                 "tier": tier.decode() if isinstance(tier, bytes)
                                 else tier} | extra)
        raise not_found

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authenticate(request)
        return JSONResponse({"object": "list", "data": [
            {"id": e.name, "object": "model", "created": 0, "owned_by": pool.pool}
            for e in pool.models]})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = bool(rt.started and rt.producer is not None and rt.fanout is not None
                     and rt.fanout.assigned and rt.producer.client.cluster.brokers())
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def queue_view(load: shedding.Load | None) -> dict[str, Any]:
    """The 202's `queue`: requests ahead (position) and the wait they mean at the measured
    throughput (None while no worker reports one)."""
    if load is None:
        return {"position": None, "estimated_wait_seconds": None}
    wait = load.wait_seconds
    return {"position": load.backlog + 1, "throughput_per_second": round(load.throughput, 3),
            "estimated_wait_seconds": None if wait is None else round(wait, 1)}


def owner_of(raw: Mapping[bytes, bytes]) -> str | None:
    """The key name a gateway recorded in a job record hash (None: none recorded)."""
    owner = raw.get(b"owner")
    return owner.decode() if owner is not None else None


def worker_record(raw: Mapping[bytes, bytes]) -> JobRecord | None:
    """The job record once a worker has written it; None while the hash holds only what the
    gateway wrote at submit (the owner)."""
    if b"request_id" not in raw or b"state" not in raw:
        return None
    return JobRecord.from_hash(dict(raw))


def job_view(record: JobRecord) -> dict[str, Any]:
    """GET /v1/generations/{id}: the job record as the API shows it."""
    view: dict[str, Any] = {"id": record.request_id, "object": "generation",
                            "state": record.state, "tier": record.tier,
                            "attempts": record.attempts, "updated_at": record.updated_at}
    result = record.result
    if result is not None:
        view["timings"] = result.timings.model_dump()
        view["cache_hit"] = result.cache_hit
        view["model"] = result.model
        view["images"] = [img.model_dump(exclude_none=True) for img in result.images]
        if result.error is not None:
            view["error"] = json.loads(result.error.model_dump_json(exclude_none=True))
    return view
