"""The operator's clients never hang (issue 17, items 5 and 6): a Kubernetes API server and a
Redis that accept the connection and then never answer — a blackholed peer, as a real TCP
listener here — end each call with a clear error within its bound, and the heartbeat reader's
breaker then skips Redis instead of waiting again.

No stack needed: the silent peers are sockets of this test. `asyncio.wait_for` bounds below
only keep a regression from hanging the suite; they assert nothing about speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from imagegen_operator.heartbeats import HeartbeatReader, HeartbeatsUnavailable
from imagegen_operator.k8s import REQUEST_TIMEOUT_S, Kube, KubeError


@pytest.fixture
async def silent_peer() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep it open, say nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield int(port)
    for writer in held:
        writer.close()
    server.close()


async def test_a_hung_api_server_ends_each_call_with_a_kube_error(
        silent_peer: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{silent_peer}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # The client library reads $KUBECONFIG once, at import.
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with Kube() as kube:
        with pytest.raises(KubeError) as err:
            await asyncio.wait_for(
                kube.patch_status("imagegen.dev/v1alpha1", "GenerationPool", "ns", "p",
                                  {"ready": "1/1"}), REQUEST_TIMEOUT_S * 3)
    assert err.value.status is None
    assert "patch GenerationPool ns/p status" in str(err.value)
    assert f"no answer within {REQUEST_TIMEOUT_S:g} s" in str(err.value)


async def test_a_blackholed_redis_costs_one_short_attempt_then_the_breaker_skips_it(
        silent_peer: int) -> None:
    reader = HeartbeatReader(f"redis://:secret-password@127.0.0.1:{silent_peer}/0")
    try:
        with pytest.raises(HeartbeatsUnavailable) as first:
            await asyncio.wait_for(reader.read("ns", "p", 0.0), 30)
        assert "not retried for" in str(first.value)
        assert "secret-password" not in str(first.value)  # the URL is never echoed
        with pytest.raises(HeartbeatsUnavailable) as second:
            await asyncio.wait_for(reader.read("ns", "p", 0.0), 30)
        assert "skipped" in str(second.value)
    finally:
        await reader.close()

