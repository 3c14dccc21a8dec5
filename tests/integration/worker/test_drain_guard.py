"""Only the preStop path can drain a worker, and a drained worker exits (issue 17, isolation).

Real things only: the worker's aiohttp server bound to 0.0.0.0 as in a pod, called once through
this machine's non-loopback address (how another pod reaches it) and once through loopback (how
the preStop hook `imagegen-worker drain`, exec'd in the container, reaches it); and a real
`imagegen-worker run` process on the local stack drained by that very command.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from imagegen_worker.metrics import WorkerMetrics
from imagegen_worker.server import Health, HttpServer

from tests.integration.worker.harness import free_port, pool_of

pytestmark = pytest.mark.integration


def outside_address() -> str:
    """This machine's address as another pod would reach it (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
        addr = str(s.getsockname()[0])
    assert not addr.startswith("127."), f"no non-loopback address to call from ({addr})"
    return addr


def post(host: str, port: int, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://{host}:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), json.load(resp)
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.load(exc)


async def test_drain_is_refused_from_another_pod_and_accepted_from_loopback() -> None:
    calls: list[int] = []
    health = Health(models_loaded=True, warmed_up=True, joined=True)
    port = free_port()
    server = HttpServer(health, WorkerMetrics(), port=port, host="0.0.0.0",
                        on_drain=lambda: calls.append(1))
    await server.start()
    try:
        code, body = await asyncio.to_thread(post, outside_address(), port, "/drain")
        assert code == 403 and "loopback" in body["error"], body
        assert calls == [] and health.ready()
        code, body = await asyncio.to_thread(post, "127.0.0.1", port, "/drain")
        assert code == 202 and calls == [1], body
    finally:
        await server.stop()


async def test_the_prestop_drain_makes_the_worker_exit_0(stack: Any, tmp_path: Path) -> None:
    async with pool_of(stack, tmp_path, "exitdrain") as pool:
        worker = await pool.spawn()
        exe = Path(sys.executable).with_name("imagegen-worker")
        hook = await asyncio.to_thread(
            subprocess.run, [str(exe), "drain", "--port", str(worker.port), "--wait", "60"],
            capture_output=True, text=True, timeout=90)
        assert hook.returncode == 0, hook.stderr
        # No signal is sent: the drained worker leaves on its own, with a clean exit.
        code = await asyncio.to_thread(worker.proc.wait, 60)
        assert code == 0, worker.tail()
        assert any(rec.get("msg") == "drained" for rec in worker.log_lines()), worker.tail()
