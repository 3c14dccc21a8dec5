"""The `imagegen` CLI through a real gateway process in front of a real worker pool."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.test_gateway import KEYS, Gateway, png_size, served
from tests.integration.worker.harness import RUN, Pool

pytestmark = pytest.mark.integration
__all__ = ["served"]  # the module-scoped gateway + pool fixture, shared with test_gateway

CLI = str(Path(sys.executable).with_name("imagegen"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}  # no IMAGEGEN_* from the caller
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=240, env=env)


async def test_cli_submit_and_status_through_gateway(served: tuple[Pool, Gateway],
                                                      tmp_path: Path) -> None:
    _, gw = served
    out = tmp_path / "out"
    done = await asyncio.to_thread(
        cli, "submit", "--gateway", gw.url, "--api-key", KEYS["all"], "--model", "tiny",
        "--size", "64x64", "--steps", "2", "--tier", "fast", "--json", "--out", str(out),
        "--negative", f"cli {RUN}", "a red square", "a green square")
    assert done.returncode == 0, done.stderr + gw.tail()
    results: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["status"] for r in results] == ["succeeded", "succeeded"]
    files = sorted(out.iterdir())
    assert len(files) == 2
    assert all(png_size(f.read_bytes()) == (64, 64) for f in files)

    status = await asyncio.to_thread(cli, "status", results[0]["request_id"],
                                     "--gateway", gw.url, "--api-key", KEYS["all"])
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)
    assert job["id"] == results[0]["request_id"] and job["state"] == "succeeded"


async def test_cli_through_gateway_names_the_refused_field(served: tuple[Pool, Gateway]) -> None:
    _, gw = served
    done = await asyncio.to_thread(
        cli, "submit", "--gateway", gw.url, "--api-key", KEYS["all"], "--model", "tiny",
        "--steps", "100000", "a red square")
    assert done.returncode == 2
    assert "HTTP 400" in done.stderr and "steps" in done.stderr, done.stderr
    nokey = await asyncio.to_thread(cli, "submit", "--gateway", gw.url, "--api-key", "sk-wrong",
                                    "a red square")
    assert nokey.returncode == 2 and "HTTP 401" in nokey.stderr, nokey.stderr
    missing = await asyncio.to_thread(cli, "status", "nope-123", "--gateway", gw.url,
                                      "--api-key", KEYS["all"])
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "[id]" in missing.stderr
