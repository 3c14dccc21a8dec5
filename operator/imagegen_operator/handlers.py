"""Kopf handlers: thin. Each one calls a reconcile function and posts what it reports.

A pool is reconciled on create/update/resume at once, and by a 1-second timer gated to the pool's
autoscaling.pollSeconds (Kopf timers have a fixed interval; the gate makes the period per pool).

Indexes (kept by Kopf from watch events, so a pass reads them instead of calling the API):
ImageModel specs, worker Deployments, worker pods and the gateways' autoscalers for the pool
pass, and pools by model for the ImageModel pass (`usedBy`, deletion blocking).

A pass is bounded as a whole (PASS_TIMEOUT_S, on top of each call's own timeout): a pass that
hangs never holds the pool's lock, and with it the pool's other handlers, for longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf
from imagegen_api import naming

from . import model_reconcile, pool_observe, pool_reconcile
from .runtime import Runtime

log = logging.getLogger(__name__)

POOLS = (naming.GROUP, naming.VERSION, naming.GENERATIONPOOL_PLURAL)
MODELS = (naming.GROUP, naming.VERSION, naming.IMAGEMODEL_PLURAL)
WORKERS = {naming.LABEL_POOL: kopf.PRESENT}
PASS_TIMEOUT_S = 60.0


def _runtime(memo: kopf.Memo) -> Runtime:
    rt = memo.get("runtime")
    if not isinstance(rt, Runtime):
        raise kopf.PermanentError("operator runtime missing from memo (startup did not run)")
    return rt


# --- indexes ---------------------------------------------------------------------------------


@kopf.index(*MODELS)
def model_specs(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): dict(spec)}


@kopf.index(*POOLS)
def pools_by_model(namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta,
                   **_: Any) -> dict[Any, Any]:
    if meta.get("deletionTimestamp"):
        return {}  # a pool being deleted no longer holds its models
    return {(namespace, model): name for model in spec.get("models") or []}


@kopf.index("apps", "v1", "deployments", labels=WORKERS)
def worker_deployments(namespace: str | None, name: str, body: kopf.Body,
                       **_: Any) -> dict[Any, Any]:
    return {(namespace, name): pool_observe.deployment_view(body)}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=WORKERS)
def pool_hpas(namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    """Which pools' gateways have an autoscaler (deleted once spec.gateway.autoscaling goes)."""
    return {(namespace, name): True}


@kopf.index("", "v1", "persistentvolumeclaims")
def cache_claims(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    """Access modes of every claim: can a pool's model-cache claim serve its placement."""
    return {(namespace, name): tuple(spec.get("accessModes") or ())}


@kopf.index("", "v1", "pods", labels=WORKERS)
def worker_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body,
                **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[naming.LABEL_POOL]): pool_observe.pod_view(body)}


# --- GenerationPool --------------------------------------------------------------------------


def _pool_memory(memo: kopf.Memo) -> pool_reconcile.PoolMemory:
    mem = memo.get("pool")
    return mem if isinstance(mem, pool_reconcile.PoolMemory) else pool_reconcile.PoolMemory()


def _pool_lock(memo: kopf.Memo) -> asyncio.Lock:
    lock = memo.get("pool_lock")
    if not isinstance(lock, asyncio.Lock):
        lock = asyncio.Lock()
        memo["pool_lock"] = lock
    return lock


async def _pool_pass(body: kopf.Body, memo: kopf.Memo, kw: dict[str, Any]) -> None:
    rt = _runtime(memo)
    indexes = pool_observe.Indexes(models=kw["model_specs"],
                                   deployments=kw["worker_deployments"], pods=kw["worker_pods"],
                                   claims=kw["cache_claims"], hpas=kw["pool_hpas"])
    async with _pool_lock(memo):
        try:
            async with asyncio.timeout(PASS_TIMEOUT_S):
                result = await pool_reconcile.reconcile(rt, body, _pool_memory(memo), indexes)
        except Exception:
            rt.metrics.reconciles.labels("GenerationPool", "error").inc()
            raise
        memo["pool"] = result.memory
    rt.metrics.reconciles.labels("GenerationPool",
                                 "degraded" if result.problems else "ok").inc()
    for ev in result.events:
        kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message)
        log.info("%s %s/%s: %s", ev.reason, body.get("metadata", {}).get("namespace"),
                 body.get("metadata", {}).get("name"), ev.message)


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS, field="spec")
async def pool_changed(body: kopf.Body, memo: kopf.Memo, **kw: Any) -> None:
    await _pool_pass(body, memo, kw)


@kopf.timer(*POOLS, interval=1.0, initial_delay=1.0, sharp=False)
async def pool_tick(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo,
                    **kw: Any) -> None:
    if meta.get("deletionTimestamp"):
        return
    if _pool_lock(memo).locked() or not pool_reconcile.is_due(_pool_memory(memo), spec,
                                                     meta.get("generation"), time.time()):
        return
    await _pool_pass(body, memo, kw)


@kopf.on.delete(*POOLS, optional=True)
async def pool_deleted(namespace: str | None, name: str | None, memo: kopf.Memo,
                       **_: Any) -> None:
    # Children go with the pool through owner references; only our gauges need forgetting.
    if namespace and name:
        _runtime(memo).metrics.forget_pool(namespace, name)


# --- ImageModel ------------------------------------------------------------------------------


async def _model_pass(body: kopf.Body, memo: kopf.Memo, kw: dict[str, Any],
                      deleting: bool = False) -> None:
    rt = _runtime(memo)
    try:
        async with asyncio.timeout(PASS_TIMEOUT_S):
            actions = await model_reconcile.reconcile(rt, body, kw["pools_by_model"],
                                                      deleting=deleting)
    except model_reconcile.ModelInUse as err:
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
async def model_changed(body: kopf.Body, memo: kopf.Memo, **kw: Any) -> None:
    await _model_pass(body, memo, kw)


@kopf.timer(*MODELS, interval=1.0, initial_delay=2.0)
async def model_tick(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **kw: Any) -> None:
    """Refreshes prefetch progress and usedBy every IMAGEGEN_MODEL_POLL_SECONDS (default 10)."""
    if meta.get("deletionTimestamp"):
        return
    now = time.monotonic()
    last = memo.get("model_polled_at")
    if isinstance(last, float) and now - last < _runtime(memo).config.model_poll_seconds:
        return
    memo["model_polled_at"] = now
    await _model_pass(body, memo, kw)


@kopf.on.delete(*MODELS)
async def model_deleted(body: kopf.Body, memo: kopf.Memo, **kw: Any) -> None:
    """Blocks deletion (the finalizer stays) while a pool still serves the model."""
    await _model_pass(body, memo, kw, deleting=True)
