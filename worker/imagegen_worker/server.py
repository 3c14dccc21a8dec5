"""HTTP endpoints of a worker (aiohttp), started first by `app` so probes answer during loading.

- GET /healthz (alias /livez): 200 while the event loop runs and no pipeline call has been stuck
  longer than the group's max poll interval (a wedged GPU gets the pod restarted); 503 otherwise.
- GET /readyz: 200 only once the models are loaded, the warmup generation succeeded and the
  consumer has joined the group; 503 before that and while draining.
- GET /metrics: Prometheus text format.
- POST /drain: begin a graceful drain; the worker exits 0 once drained. Only callers on the
  pod's loopback may drain — the preStop hook (`imagegen-worker drain`, exec'd in the container)
  is; any other pod reaching the port gets 403, so nobody in the cluster can idle a pool.
  GET /drain: progress (read-only, open like the probes).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import WorkerMetrics


def is_loopback(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else or unknown."""
    if not remote:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass
class Health:
    """What the probes report; written by `app`."""

    models_loaded: bool = False
    warmed_up: bool = False
    joined: bool = False
    draining: bool = False
    drained: bool = False
    generating_since: float | None = None  # monotonic start of the pipeline call in progress
    stuck_after_s: float = 600.0
    reasons: list[str] = field(default_factory=list)

    def ready(self) -> bool:
        return (self.models_loaded and self.warmed_up and self.joined and not self.draining
                and not self.reasons)  # reasons: dependencies down now (outage.Outages)

    def live(self, now: float) -> bool:
        since = self.generating_since
        return since is None or now - since <= self.stuck_after_s

    def describe(self) -> dict[str, Any]:
        return {
            "ready": self.ready(),
            "models_loaded": self.models_loaded,
            "warmed_up": self.warmed_up,
            "joined": self.joined,
            "draining": self.draining,
            "drained": self.drained,
            "reasons": list(self.reasons),
        }


class HttpServer:
    def __init__(self, health: Health, metrics: WorkerMetrics, *, port: int,
                 on_drain: Callable[[], None], host: str = "0.0.0.0",
                 in_flight: Callable[[], int] = lambda: 0) -> None:
        self.health = health
        self.metrics = metrics
        self.port = port
        self.host = host
        self.on_drain = on_drain
        self.in_flight = in_flight
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/drain", self._drain)
        app.router.add_get("/drain", self._drain_status)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _livez(self, _req: web.Request) -> web.Response:
        if self.health.live(time.monotonic()):
            return web.Response(text="ok\n")
        return web.Response(status=503, text="pipeline call stuck\n")

    async def _readyz(self, _req: web.Request) -> web.Response:
        body = json.dumps(self.health.describe()) + "\n"
        status = 200 if self.health.ready() else 503
        return web.Response(status=status, text=body, content_type="application/json")

    async def _metrics(self, _req: web.Request) -> web.Response:
        resp = web.Response(body=self.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def _drain(self, req: web.Request) -> web.Response:
        if not is_loopback(req.remote):
            return web.json_response(
                {"error": f"POST /drain is accepted only from the pod's loopback (the preStop "
                          f"hook `imagegen-worker drain`); refused for {req.remote}"},
                status=403)
        self.on_drain()
        return await self._drain_status(req, status=202)

    async def _drain_status(self, _req: web.Request, status: int = 200) -> web.Response:
        body = {"draining": self.health.draining, "drained": self.health.drained,
                "in_flight": self.in_flight()}
        return web.json_response(body, status=status)
