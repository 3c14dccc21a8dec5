"""Fixtures of the worker's integration tests (tests/integration/worker/).

Nothing is faked: `shared` is one real worker process on the local stack (a pool of its own,
fault hook fail_prompt=POISON) that the behaviours not needing their own workers share across
the package; `stages_env`/`st` wire the worker's stages in-process (see `stages`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.worker.harness import Pool, Worker, pool_of
from tests.integration.worker.stages import st, stages_env

__all__ = ["package_tmp", "shared", "st", "stages_env"]


@pytest.fixture(scope="package")
def package_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker")


@pytest.fixture(scope="package")
async def shared(stack: Any, package_tmp: Path) -> AsyncIterator[tuple[Pool, Worker]]:
    async with pool_of(stack, package_tmp, "shared") as pool:
        worker = await pool.spawn(faults="fail_prompt=POISON")
        yield pool, worker
