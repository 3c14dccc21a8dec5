"""One entry per stack component: how to start it, how to know it is healthy, where it listens.
Started in this order by `dev/stack up`; stopped in reverse by `dev/stack down`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import certs, health, node
from .layout import DEV, ROOT, Layout


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[Layout], list[str]]
    healthy: Callable[[Layout], bool]
    address: Callable[[Layout], str]
    prepare: Callable[[Layout], None] = lambda lay: None
    after_start: Callable[[Layout], None] = lambda lay: None
    env: Callable[[Layout], dict[str, str]] = lambda lay: dict(os.environ)
    timeout: float = 90.0
    # `dev/stack down`: what to do while the process still runs, and after it stopped.
    before_stop: Callable[[Layout], None] = lambda lay: None
    after_stop: Callable[[Layout], None] = lambda lay: None


# --- etcd ----------------------------------------------------------------------------------


def _etcd(lay: Layout) -> list[str]:
    return [
        str(lay.etcd_bin),
        "--data-dir",
        str(lay.state / "etcd"),
        "--name",
        "imagegen",
        "--listen-client-urls",
        f"http://127.0.0.1:{lay.etcd_port}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{lay.etcd_port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{lay.etcd_peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{lay.etcd_peer_port}",
        "--initial-cluster",
        f"imagegen=http://127.0.0.1:{lay.etcd_peer_port}",
        "--unsafe-no-fsync",
        "--quota-backend-bytes",
        str(2 * 1024**3),
        "--log-level",
        "warn",
    ]


# --- control plane -------------------------------------------------------------------------


def _apiserver(lay: Layout) -> list[str]:
    c = lay.certs
    return [
        str(lay.k8s_bin("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{lay.etcd_port}",
        f"--secure-port={lay.apiserver_port}",
        # All addresses: pods on the real nodes reach it at the host's address (Layout.pod_env).
        "--bind-address=0.0.0.0",
        "--advertise-address=127.0.0.1",
        # logs/exec/port-forward on real nodes: the API server calls the kubelet at the node's
        # InternalIP with its own client certificate and checks the kubelet's against the CA.
        f"--kubelet-client-certificate={c / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={c / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={c / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--endpoint-reconciler-type=none",
        "--service-cluster-ip-range=10.96.0.0/16",
        f"--tls-cert-file={c / 'apiserver.crt'}",
        f"--tls-private-key-file={c / 'apiserver.key'}",
        f"--client-ca-file={c / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={c / 'sa.pub'}",
        f"--service-account-signing-key-file={c / 'sa.key'}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        f"--cert-dir={lay.state / 'apiserver-certs'}",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=1",
    ]


def _prepare_apiserver(lay: Layout) -> None:
    certs.ensure(lay.certs, lay.host_ip)
    certs.write_kubeconfig(lay.kubeconfig, lay.apiserver_url, lay.certs)


def _controller_manager(lay: Layout) -> list[str]:
    c = lay.certs
    kc = str(lay.kubeconfig)
    return [
        str(lay.k8s_bin("kube-controller-manager")),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.controller_manager_port}",
        f"--service-account-private-key-file={c / 'sa.key'}",
        f"--root-ca-file={c / 'ca.crt'}",
        f"--cluster-signing-cert-file={c / 'ca.crt'}",
        f"--cluster-signing-key-file={c / 'ca.key'}",
        "--use-service-account-credentials=true",
        "--controllers=*",
        f"--cert-dir={lay.state / 'controller-manager-certs'}",
        "--v=1",
    ]


def _scheduler(lay: Layout) -> list[str]:
    kc = str(lay.kubeconfig)
    return [
        str(lay.k8s_bin("kube-scheduler")),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.scheduler_port}",
        "--v=1",
    ]


# --- KWOK ----------------------------------------------------------------------------------


def _prepare_kwok(lay: Layout) -> None:
    """Stage config: KWOK's node stages plus ours for pods (see dev/kwok/pod-stages.yaml)."""
    stages = lay.kwok_dir / "stages"
    parts = [
        (stages / "node" / "fast" / "node-initialize.yaml").read_text(),
        (stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml").read_text(),
        (DEV / "kwok" / "pod-stages.yaml").read_text(),
    ]
    (lay.state / "kwok").mkdir(parents=True, exist_ok=True)
    (lay.state / "kwok" / "stages.yaml").write_text("\n---\n".join(p.strip() for p in parts) + "\n")
    # Node leases held by a previous KWOK process: KWOK 0.8 only creates leases, and fails with
    # "already exists" on a restart, leaving the nodes without heartbeats (not Ready). Every
    # lease in kube-node-lease here belongs to the fake nodes.
    try:
        _kubectl(lay, "delete", "lease", "--all", "-n", "kube-node-lease", "--ignore-not-found")
    except (RuntimeError, subprocess.TimeoutExpired):
        pass  # first start: nothing to clean up


def _kwok(lay: Layout) -> list[str]:
    return [
        str(lay.kwok_dir / "bin" / "kwok"),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={lay.state / 'kwok' / 'stages.yaml'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        # Node heartbeats as Leases (the heartbeat-with-lease stage expects them): without them
        # the node lifecycle controller saw every node go not-Ready about once a minute and
        # marked all their pods not Ready.
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.0/16",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{lay.kwok_port}",
    ]


def _kubectl(lay: Layout, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(lay.k8s_bin("kubectl")), f"--kubeconfig={lay.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _nodes_ready(lay: Layout) -> bool:
    try:
        out = _kubectl(
            lay,
            "get",
            "nodes",
            "-l",
            "type=kwok",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}"
            '{"\\n"}{end}',
        )
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    states = out.split()
    return len(states) >= 5 and all(s == "True" for s in states)


def _create_nodes(lay: Layout) -> None:
    _kubectl(
        lay,
        "apply",
        "--server-side",
        # The stack owns its fake nodes: take fields back from any hand edit.
        "--force-conflicts",
        "--field-manager=dev-stack",
        "-f",
        str(DEV / "kwok" / "nodes.yaml"),
    )


# --- Kafka ---------------------------------------------------------------------------------


def _prepare_kafka(lay: Layout) -> None:
    kdir = lay.state / "kafka"
    kdir.mkdir(parents=True, exist_ok=True)
    props = kdir / "server.properties"
    props.write_text(f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{lay.kafka_controller_port}
listeners=PLAINTEXT://127.0.0.1:{lay.kafka_port},CONTROLLER://127.0.0.1:{lay.kafka_controller_port},PODS://{lay.host_ip}:{lay.kafka_pods_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{lay.kafka_port},PODS://{lay.host_ip}:{lay.kafka_pods_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PODS:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={kdir / "data"}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
delete.topic.enable=true
""")
    (kdir / "log4j.properties").write_text(f"""log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={lay.logs / "kafka-server.log"}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
""")
    if not (kdir / "data" / "meta.properties").exists():
        cluster_id = (
            _kafka_java(lay, "kafka.tools.StorageTool", "random-uuid").strip() or uuid.uuid4().hex
        )
        _kafka_java(lay, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props))


def _kafka_java(lay: Layout, *args: str) -> str:
    return subprocess.run(
        ["java", "-Xmx256m", "-cp", f"{lay.kafka_libs}/*", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def _kafka(lay: Layout) -> list[str]:
    kdir = lay.state / "kafka"
    return [
        "java",
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
        "-cp",
        f"{lay.kafka_libs}/*",
        "kafka.Kafka",
        str(kdir / "server.properties"),
    ]


# --- Redis and MinIO ----------------------------------------------------------------------


def _redis(lay: Layout) -> list[str]:
    (lay.state / "redis").mkdir(parents=True, exist_ok=True)
    return [
        shutil.which("redis-server") or "/usr/bin/redis-server",
        "--port",
        str(lay.redis_port),
        "--bind",
        "127.0.0.1",
        lay.host_ip,  # pods on the real nodes
        # Without a password Redis refuses every non-loopback client in protected mode: pods on
        # the real nodes reach it at the host's address (it listens only there and on loopback).
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(lay.state / "redis"),
    ]


def _minio(lay: Layout) -> list[str]:
    return [
        str(lay.minio_bin),
        "server",
        str(lay.state / "minio"),
        "--address",
        f":{lay.minio_port}",  # every address: pods on the real nodes use the host's
        "--console-address",
        f"127.0.0.1:{lay.minio_console_port}",
        "--quiet",
    ]


def _minio_env(lay: Layout) -> dict[str, str]:
    return {
        **os.environ,
        "MINIO_ROOT_USER": lay.s3_access_key,
        "MINIO_ROOT_PASSWORD": lay.s3_secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }


# --- the pod runner ------------------------------------------------------------------------


def _podrunner(lay: Layout) -> list[str]:
    python = ROOT / ".venv" / "bin" / "python"
    return [str(python if python.exists() else sys.executable), str(DEV / "podrunner.py")]


def _podrunner_env(lay: Layout) -> dict[str, str]:
    return {**os.environ, **lay.env(), "PYTHONUNBUFFERED": "1"}


def _podrunner_healthy(lay: Layout) -> bool:
    return (lay.state / "podrunner.ready").exists()


def _prepare_podrunner(lay: Layout) -> None:
    (lay.state / "podrunner.ready").unlink(missing_ok=True)


COMPONENTS: tuple[Component, ...] = (
    Component(
        "etcd",
        _etcd,
        lambda lay: health.http_ok(f"http://127.0.0.1:{lay.etcd_port}/health"),
        lambda lay: f"http://127.0.0.1:{lay.etcd_port}",
    ),
    Component(
        "kube-apiserver",
        _apiserver,
        lambda lay: health.https_ok(f"{lay.apiserver_url}/readyz", lay.certs),
        lambda lay: lay.apiserver_url,
        prepare=_prepare_apiserver,
        timeout=120,
    ),
    Component(
        "kube-controller-manager",
        _controller_manager,
        lambda lay: health.https_insecure_ok(
            f"https://127.0.0.1:{lay.controller_manager_port}/healthz"
        ),
        lambda lay: f"https://127.0.0.1:{lay.controller_manager_port}",
    ),
    Component(
        "kube-scheduler",
        _scheduler,
        lambda lay: health.https_insecure_ok(f"https://127.0.0.1:{lay.scheduler_port}/healthz"),
        lambda lay: f"https://127.0.0.1:{lay.scheduler_port}",
    ),
    Component(
        "kwok",
        _kwok,
        _nodes_ready,
        lambda lay: "5 fake nodes (2 on-demand GPU, 2 spot GPU, 1 CPU)",
        prepare=_prepare_kwok,
        after_start=_create_nodes,
    ),
    Component(
        "kafka",
        _kafka,
        lambda lay: health.kafka_api_versions(lay.kafka_port),
        lambda lay: f"127.0.0.1:{lay.kafka_port}",
        prepare=_prepare_kafka,
        timeout=120,
    ),
    Component(
        "redis",
        _redis,
        lambda lay: health.redis_ping(lay.redis_port),
        lambda lay: f"redis://127.0.0.1:{lay.redis_port}",
    ),
    Component(
        "minio",
        _minio,
        lambda lay: health.http_ok(f"http://127.0.0.1:{lay.minio_port}/minio/health/live"),
        lambda lay: f"http://127.0.0.1:{lay.minio_port}",
        env=_minio_env,
    ),
    Component(
        "podrunner",
        _podrunner,
        _podrunner_healthy,
        lambda lay: "runs pods labelled imagegen.dev/local-runner=true",
        prepare=_prepare_podrunner,
        env=_podrunner_env,
    ),
)


# --- real kubelet nodes (dev/localstack/node.py) ---------------------------------------------


def _node_components(n: node.RealNode) -> tuple[Component, Component]:
    def stop_containerd(lay: Layout) -> None:
        node.kill_tasks(lay, n)

    return (
        Component(
            f"containerd-{n.name}",
            lambda lay: node.containerd_argv(lay, n),
            lambda lay: node.containerd_healthy(lay, n),
            lambda lay: f"unix://{node.socket_path(lay, n)}",
            prepare=lambda lay: node.prepare_containerd(lay, n),
            # The sandbox image, before the kubelet asks for its first pod.
            after_start=lambda lay: node.pull_pause(lay, n),
            before_stop=stop_containerd,
            after_stop=lambda lay: node.cleanup_node(lay, n),
            timeout=300,
        ),
        Component(
            f"kubelet-{n.name}",
            lambda lay: node.kubelet_argv(lay, n),
            lambda lay: node.kubelet_healthy(lay, n),
            lambda lay: (f"node {n.name} ({n.capacity_type}, {node.GPUS_PER_NODE} GPUs "
                         f"advertised) https://{lay.host_ip}:{n.kubelet_port}"),
            prepare=lambda lay: node.prepare_kubelet(lay, n),
            after_start=lambda lay: node.advertise_gpus(lay, n),
            before_stop=lambda lay: node.drain_pods(lay, n),
            timeout=120,
        ),
    )


def _registry_config(lay: Layout) -> None:
    """Storage in the build cache: what was pushed survives `down` and other checkouts, so
    the worker's ~6 GB dependency layer is pushed once per machine."""
    data = lay.cache / "registry-data"
    data.mkdir(parents=True, exist_ok=True)
    (lay.state / "registry.yml").write_text(f"""version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {data}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{lay.registry_port}
""")


def _push_pause(lay: Layout) -> None:
    for step in (["build", "pause"], ["push", "pause"]):
        proc = subprocess.run([str(DEV / "images.sh"), *step], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "IMAGEGEN_REGISTRY": lay.registry})
        if proc.returncode != 0:
            raise RuntimeError(f"dev/images.sh {' '.join(step)}: {proc.stderr.strip()[-300:]}")


REGISTRY = Component(
    "registry",
    lambda lay: [str(lay.registry_bin), "serve", str(lay.state / "registry.yml")],
    lambda lay: health.http_ok(f"http://127.0.0.1:{lay.registry_port}/v2/"),
    lambda lay: f"http://{lay.registry} (images the real nodes pull)",
    prepare=_registry_config,
    # The sandbox image every real node needs first.
    after_start=_push_pause,
    timeout=300,
)

COMPONENTS = COMPONENTS + ((REGISTRY,) if node.nodes() else ()) + tuple(
    c for n in node.nodes() for c in _node_components(n))


def host_cleanup(lay: Layout) -> list[str]:
    """After every component stopped: what the real nodes changed on the host, undone."""
    if not (lay.state / "nodes").exists():
        return []
    node.remove_netns(lay)
    node.remove_bridges()
    return node.restore_sysctls(lay)


def by_name(name: str) -> Component:
    for c in COMPONENTS:
        if c.name == name:
            return c
    raise KeyError(name)


def bin_links(lay: Layout) -> dict[str, Path]:
    return {
        "kubectl": lay.k8s_bin("kubectl"),
        "helm": lay.helm_bin,
        "kwok": lay.kwok_dir / "bin" / "kwok",
        "etcd": lay.etcd_bin,
        "minio": lay.minio_bin,
        "promtool": lay.promtool_bin,
        "kubelet": lay.kubelet_bin,
    }
