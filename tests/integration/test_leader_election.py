"""Leader election on the real API server: two operator replicas (real processes, the same code
the Deployment runs) started at the same instant, many times over; exactly one of them acts on
the pool in every trial, and when the leader is killed (-9: no release) the standby takes over
once the Lease has expired.

"Acts" is counted per replica from what only an active replica has: its metrics endpoint and
reconcile counter (imagegen_operator_reconciles_total) — a standby serves /healthz and nothing
else, and its log says so. The Lease object's holder must be the replica that acts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT, Kubectl, StackEnv, free_port, unique, wait_for

pytestmark = pytest.mark.integration

TRIALS = 5
# Short timings so a takeover fits a test; the same ratios as the defaults (15/10/2).
LEASE_S, RENEW_S, RETRY_S = 4, 3, 1

POOL = """
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {name: le}
spec:
  models: [tiny-sdxl]
  warm: {minReplicas: 0, maxReplicas: 1}
  cold: {maxReplicas: 0}
  queue: {partitions: 1}
  autoscaling: {pollSeconds: 1}
"""


@dataclass
class Replica:
    name: str
    log_path: Path
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, stack: StackEnv, namespace: str, lease: str) -> None:
        env = {**os.environ, **stack.env,
               "IMAGEGEN_WATCH_NAMESPACES": namespace,
               "POD_NAME": self.name, "POD_NAMESPACE": namespace,
               "IMAGEGEN_LEASE_NAME": lease,
               "IMAGEGEN_LEASE_DURATION_SECONDS": str(LEASE_S),
               "IMAGEGEN_LEASE_RENEW_DEADLINE_SECONDS": str(RENEW_S),
               "IMAGEGEN_LEASE_RETRY_PERIOD_SECONDS": str(RETRY_S),
               "IMAGEGEN_HTTP_PORT": str(self.health_port),
               "IMAGEGEN_METRICS_PORT": str(self.metrics_port)}
        env.pop("IMAGEGEN_OPERATOR_STANDALONE", None)
        out = open(self.log_path, "ab")  # owned by the process for its lifetime
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "imagegen_operator"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def acquired(self) -> bool:
        return f"{self.name} acquired Lease" in self.log()

    def reconciles(self) -> float:
        """Pool passes this replica made; 0 when it serves no metrics (a standby)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=3) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        return sum(float(m.group(1)) for m in re.finditer(
            r'^imagegen_operator_reconciles_total\{[^}]*kind="GenerationPool"[^}]*\} (\S+)$',
            text, re.M))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def lease_namespace(kubectl: Kubectl, crds: None) -> Iterator[str]:
    """A namespace no other test operator watches (they watch t-*), holding one pool."""
    ns = unique("le")
    kubectl("create", "namespace", ns)
    kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "tiny-model.yaml"))
    kubectl("apply", "-n", ns, "-f", "-", input=POOL)
    yield ns
    for kind in ("generationpools.imagegen.dev", "imagemodels.imagegen.dev"):
        for name in kubectl("get", kind, "-n", ns, "-o", "name", check=False).stdout.split():
            kubectl("patch", name, "-n", ns, "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def holder(kubectl: Kubectl, ns: str, lease: str) -> str:
    obj = json.loads(kubectl("get", "lease", lease, "-n", ns, "-o", "json").stdout)
    return str(obj["spec"].get("holderIdentity") or "")


def trial(stack: StackEnv, kubectl: Kubectl, ns: str, n: int) -> float:
    """Two replicas at once: exactly one acts; kill -9 it: the other takes over. Returns the
    seconds from the kill to the new leader's first pool pass."""
    lease = f"igop-{n}"
    logs = stack.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pair = [Replica(f"op-{n}-{side}", logs / f"leader-{ns}-{n}-{side}.log") for side in "ab"]
    try:
        for r in pair:  # back to back: the same instant, as far as the API server can tell
            r.start(stack, ns, lease)

        def one_leads() -> Replica | None:
            for r in pair:
                assert r.alive(), f"{r.name} exited:\n{r.log()[-3000:]}"
            leaders = [r for r in pair if r.acquired()]
            assert len(leaders) <= 1, f"trial {n}: both acquired the Lease"
            return leaders[0] if leaders and leaders[0].reconciles() >= 3 else None

        leader = wait_for(one_leads, 90, f"trial {n}: one replica leading, 3 pool passes")
        assert isinstance(leader, Replica)
        (standby,) = [r for r in pair if r is not leader]
        # the standby waited the whole time: no pass, no metrics, never acquired
        assert standby.reconciles() == 0, f"trial {n}: two actors"
        assert not standby.acquired(), standby.log()[-3000:]
        assert f"standby, Lease {ns}/{lease} held by {leader.name}" in standby.log()
        assert holder(kubectl, ns, lease) == leader.name

        # the leader dies without releasing: the standby takes over once the Lease expires
        killed_at = time.monotonic()
        leader.stop(signal.SIGKILL)
        wait_for(lambda: standby.acquired() and standby.reconciles() > 0,
                 LEASE_S + RETRY_S * 1.2 + 60, f"trial {n}: {standby.name} takes over")
        took = time.monotonic() - killed_at
        assert holder(kubectl, ns, lease) == standby.name
        return took
    finally:
        for r in pair:
            r.stop(signal.SIGKILL)


def test_two_replicas_started_together_exactly_one_acts(
        stack: StackEnv, kubectl: Kubectl, lease_namespace: str) -> None:
    takeovers = [trial(stack, kubectl, lease_namespace, n) for n in range(TRIALS)]
    assert len(takeovers) == TRIALS
    print(f"\nleader election: {TRIALS} trials, 1 actor each; takeover after kill -9 "
          f"(lease {LEASE_S} s, retry {RETRY_S} s, until the first pool pass): "
          + ", ".join(f"{t:.1f}s" for t in takeovers))


def test_graceful_stop_releases_the_lease(stack: StackEnv, kubectl: Kubectl,
                                          lease_namespace: str) -> None:
    """SIGTERM: Kopf stops, then the leader hands the Lease back (holder empty) — a standby
    does not wait for expiry on a rollout."""
    ns = lease_namespace
    logs = stack.state_dir / "logs"
    r = Replica("op-graceful", logs / f"leader-{ns}-graceful.log")
    try:
        r.start(stack, ns, "igop-graceful")
        wait_for(lambda: r.acquired() and r.reconciles() > 0, 90, "the replica leads")
        r.stop(signal.SIGTERM)
        assert r.proc is not None and r.proc.returncode == 0, r.log()[-3000:]
        assert "op-graceful released Lease" in r.log(), r.log()[-3000:]
        assert holder(kubectl, ns, "igop-graceful") == ""
    finally:
        r.stop(signal.SIGKILL)
