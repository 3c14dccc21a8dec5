"""Fixtures of the chaos suite: the integration fixtures (the real local stack), every test
marked `chaos`, and a stack check after each test, so a scenario that could not restore a
component it faulted fails loudly instead of breaking the next user of the shared stack.

Run it holding the stack lock on a shared machine: `flock /tmp/imagegen-stack.lock make chaos`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.localstack import chaos
from tests.integration.conftest import *  # noqa: F403 - the stack and operator fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def stack_restored() -> Iterator[None]:
    """Whatever a scenario did, every faultable component is up and healthy afterwards."""
    yield
    chaos.restore()


@pytest.fixture(scope="module")
def chaos_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chaos")
