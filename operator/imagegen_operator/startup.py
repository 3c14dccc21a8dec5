"""Process wiring: leader election, settings, the runtime in Kopf's memo, the metrics endpoint,
and Kopf itself (`kopf.operator`, standalone: the Lease, not Kopf peering, keeps one replica
active).

With leader election (the default) a replica first acquires the Lease, answering /healthz as a
standby meanwhile; only then does Kopf start. A leader that loses the Lease exits at once (the
Deployment restarts it as a standby); on SIGTERM Kopf stops first, then the Lease is released so a
standby takes over at its next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import kopf
from aiohttp import web
from imagegen_api import naming
from prometheus_client import start_http_server

from . import handlers
from .config import OperatorConfig
from .k8s import Kube
from .leader import LeaderElector
from .runtime import Runtime

log = logging.getLogger("imagegen_operator")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    rt = memo["runtime"]
    assert isinstance(rt, Runtime)
    # Kopf's bookkeeping lives in annotations: the status belongs to what users read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = naming.FINALIZER
    # Only warnings become Events automatically; decisions are posted explicitly.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    # Kopf's own patches (finalizers, progress annotations) and event posts: bounded like ours
    # (k8s.REQUEST_TIMEOUT_S), retried a few times only, so a hung request never holds a pool's
    # handlers (deletion included) for minutes.
    settings.networking.request_timeout = 10
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = (1, 2, 4)
    # No Kopf peering: the Lease (leader.py) decides who acts, before Kopf starts.
    settings.peering.standalone = True
    await rt.kube.open()
    start_http_server(rt.config.metrics_port, registry=rt.metrics.registry)
    log.info("imagegen-operator started: metrics on :%d, health on :%d/healthz, %s",
             rt.config.metrics_port, rt.config.health_port,
             "standalone, no leader election" if rt.config.standalone else
             f"leader of Lease {rt.config.lease.namespace}/{rt.config.lease.name} "
             f"as {rt.config.lease.identity}")


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("runtime")
    if isinstance(rt, Runtime):
        await rt.close()


def run(config: OperatorConfig) -> None:
    assert handlers.POOLS  # the handlers register themselves on import
    asyncio.run(_run(config))


async def _run(config: OperatorConfig) -> None:
    if config.standalone:
        await _operate(config)
        return
    lease = config.lease
    async with Kube() as kube:
        elector = LeaderElector(kube=kube, namespace=lease.namespace, name=lease.name,
                                identity=lease.identity, timings=lease.timings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Kopf installs its own once it runs
            loop.add_signal_handler(sig, stopping.set)
        log.info("leader election: %s waiting for Lease %s/%s", lease.identity,
                 lease.namespace, lease.name)
        async with _standby_health(config.health_port):
            leading = await _first(elector.acquire(), stopping.wait())
        if not leading or stopping.is_set():
            await elector.release()
            return
        holding = asyncio.create_task(elector.hold(), name="lease-renewal")
        holding.add_done_callback(_exit_when_lost)
        try:
            # A SIGTERM before Kopf installed its own handlers still stops it.
            await _operate(config, stop_flag=stopping)
        finally:
            holding.remove_done_callback(_exit_when_lost)
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await holding
            await elector.release()


async def _operate(config: OperatorConfig, stop_flag: asyncio.Event | None = None) -> None:
    namespaces = list(config.namespaces)
    await kopf.operator(
        stop_flag=stop_flag,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
        memo=kopf.Memo(runtime=Runtime(config=config)),
    )


def _exit_when_lost(task: asyncio.Task[None]) -> None:
    """A leader that lost its Lease must stop acting before another replica can take it over
    (lease duration > renew deadline): exit now, without waiting for handlers in flight."""
    if task.cancelled():
        return
    log.error("leader election lost: %s; exiting (restarted as a standby)", task.exception())
    logging.shutdown()
    os._exit(1)


async def _first(acquire: Any, stop: Any) -> bool:
    """Awaits both; True when `acquire` finished first, False when `stop` did."""
    tasks = [asyncio.ensure_future(acquire), asyncio.ensure_future(stop)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return tasks[0] in done and tasks[0].exception() is None


@contextlib.asynccontextmanager
async def _standby_health(port: int) -> AsyncIterator[None]:
    """/healthz while waiting for the Lease: a standby is alive (and Ready, so rollouts and
    `helm --wait` proceed); Kopf's own liveness endpoint takes the port once it leads."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"role": "standby"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    try:
        yield
    finally:
        await runner.cleanup()
