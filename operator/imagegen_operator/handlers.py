"""Kopf handlers: thin. Each one calls a reconcile function and posts what it reports.

A pool is reconciled on create/update/resume at once, and by a 1-second timer gated to the pool's
autoscaling.pollSeconds (Kopf timers have a fixed interval; the gate makes the period per pool).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from imagegen_api import naming

from . import models, pools
from .runtime import Runtime

log = logging.getLogger(__name__)

POOLS = (naming.GROUP, naming.VERSION, naming.GENERATIONPOOL_PLURAL)
MODELS = (naming.GROUP, naming.VERSION, naming.IMAGEMODEL_PLURAL)


def _runtime(memo: kopf.Memo) -> Runtime:
    rt = memo.get("runtime")
    if not isinstance(rt, Runtime):
        raise kopf.PermanentError("operator runtime missing from memo (startup did not run)")
    return rt


def _pool_memory(memo: kopf.Memo) -> pools.PoolMemory:
    mem = memo.get("pool")
    if not isinstance(mem, pools.PoolMemory):
        mem = pools.PoolMemory()
        memo["pool"] = mem
    return mem


async def _pool_pass(body: kopf.Body, memo: kopf.Memo) -> None:
    rt = _runtime(memo)
    mem = _pool_memory(memo)
    async with mem.lock:
        try:
            result = await pools.reconcile(rt, body, mem)
        except Exception:
            rt.metrics.reconciles.labels("GenerationPool", "error").inc()
            raise
    rt.metrics.reconciles.labels("GenerationPool",
                                 "degraded" if result.problems else "ok").inc()
    for ev in result.events:
        kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message)
        log.info("%s %s/%s: %s", ev.reason, body.get("metadata", {}).get("namespace"),
                 body.get("metadata", {}).get("name"), ev.message)


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS, field="spec")
async def pool_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _pool_pass(body, memo)


@kopf.timer(*POOLS, interval=1.0, initial_delay=1.0, sharp=False)
async def pool_tick(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo,
                    **_: Any) -> None:
    if meta.get("deletionTimestamp"):
        return
    mem = _pool_memory(memo)
    if mem.lock.locked() or not pools.is_due(mem, spec, meta.get("generation"), time.time()):
        return
    await _pool_pass(body, memo)


@kopf.on.delete(*POOLS, optional=True)
async def pool_deleted(namespace: str | None, name: str | None, memo: kopf.Memo,
                       **_: Any) -> None:
    # Children go with the pool through owner references; only our gauges need forgetting.
    if namespace and name:
        _runtime(memo).metrics.forget_pool(namespace, name)


async def _model_pass(body: kopf.Body, memo: kopf.Memo, deleting: bool = False) -> None:
    rt = _runtime(memo)
    try:
        actions = await models.reconcile(rt, body, deleting=deleting)
    except models.ModelInUse as err:
        rt.metrics.reconciles.labels("ImageModel", "blocked").inc()
        kopf.event(body, type="Warning", reason="DeletionBlocked", message=str(err))
        raise kopf.TemporaryError(str(err), delay=10) from err
    rt.metrics.reconciles.labels("ImageModel", "ok").inc()
    for action in actions:
        kopf.event(body, type="Normal", reason="Prefetch", message=action)
        log.info("%s", action)


@kopf.on.resume(*MODELS)
@kopf.on.create(*MODELS)
@kopf.on.update(*MODELS, field="spec")
async def model_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _model_pass(body, memo)


@kopf.timer(*MODELS, interval=1.0, initial_delay=2.0)
async def model_tick(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Refreshes prefetch progress and usedBy every IMAGEGEN_MODEL_POLL_SECONDS (default 10)."""
    if meta.get("deletionTimestamp"):
        return
    now = time.monotonic()
    last = memo.get("model_polled_at")
    if isinstance(last, float) and now - last < _runtime(memo).config.model_poll_seconds:
        return
    memo["model_polled_at"] = now
    await _model_pass(body, memo)


@kopf.on.delete(*MODELS)
async def model_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Blocks deletion (the finalizer stays) while a pool still serves the model."""
    await _model_pass(body, memo, deleting=True)
