"""Process wiring: settings, the runtime in Kopf's memo, the metrics endpoint, `kopf.run`."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import kopf
from imagegen_api import naming
from prometheus_client import start_http_server

from . import handlers
from .config import OperatorConfig
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
    settings.networking.request_timeout = 30
    settings.peering.clusterwide = not rt.config.namespaces
    await rt.kube.open()
    start_http_server(rt.config.metrics_port, registry=rt.metrics.registry)
    log.info("imagegen-operator started: metrics on :%d, health on :%d/healthz, %s",
             rt.config.metrics_port, rt.config.health_port,
             "standalone" if rt.config.standalone else f"peering {rt.config.peering_name}")


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("runtime")
    if isinstance(rt, Runtime):
        await rt.close()


def run(config: OperatorConfig) -> None:
    assert handlers.POOLS  # the handlers register themselves on import
    namespaces = list(config.namespaces)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=config.standalone,
        peering_name=None if config.standalone else config.peering_name,
        # Kopf pauses every operator of equal priority once they see each other: a random
        # priority per replica makes exactly one (the highest) active, the others standby.
        priority=None if config.standalone else secrets.randbelow(1_000_000) + 1,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
        memo=kopf.Memo(runtime=Runtime(config=config)),
    )
