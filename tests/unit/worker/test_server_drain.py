"""Who may drain a worker (issue 17, isolation): only callers on the pod's loopback — the preStop
hook exec'd in the container. Pure: the address check. The real server refusing a call from
another address is tests/integration/worker/test_drain_guard.py."""

from __future__ import annotations

import pytest
from imagegen_worker.server import is_loopback


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_callers_may_drain(remote: str) -> None:
    assert is_loopback(remote)


@pytest.mark.parametrize("remote", ["10.0.3.7", "192.168.1.20", "fe80::1%eth0", "::ffff:10.0.0.1",
                                    "", None, "not-an-address"])
def test_everyone_else_may_not(remote: str | None) -> None:
    assert not is_loopback(remote)
