"""Where everything lives: the repository, the version-keyed build cache, the state directory
(data, logs, pids, certs, kubeconfig) and the fixed loopback ports (overridable by env)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "dev"


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEV / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.split("#", 1)[0].strip()
    return out


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"IMAGEGEN_STACK_{name}_PORT", default))


@dataclass(frozen=True)
class Layout:
    state: Path
    cache: Path
    versions: dict[str, str]
    etcd_port: int = _port("ETCD", 12379)
    etcd_peer_port: int = _port("ETCD_PEER", 12380)
    apiserver_port: int = _port("APISERVER", 16443)
    controller_manager_port: int = _port("CONTROLLER_MANAGER", 16257)
    scheduler_port: int = _port("SCHEDULER", 16259)
    kwok_port: int = _port("KWOK", 16080)
    kafka_port: int = _port("KAFKA", 19092)
    kafka_controller_port: int = _port("KAFKA_CONTROLLER", 19093)
    # Kafka's second listener, advertised at the host's address for pods on the real nodes.
    kafka_pods_port: int = _port("KAFKA_PODS", 19094)
    redis_port: int = _port("REDIS", 16379)
    minio_port: int = _port("MINIO", 19000)
    minio_console_port: int = _port("MINIO_CONSOLE", 19001)
    registry_port: int = _port("REGISTRY", 15000)
    s3_access_key: str = "imagegen"
    s3_secret_key: str = "imagegen-secret"

    def component_dir(self, name: str, version_key: str) -> Path:
        return self.cache / f"{name}-{self.versions[version_key]}"

    def k8s_bin(self, name: str) -> Path:
        return self.component_dir("kubernetes", "K8S_VERSION") / "bin" / name

    @property
    def kubelet_bin(self) -> Path:
        return self.component_dir("kubelet", "K8S_VERSION") / "bin" / "kubelet"

    @property
    def registry_bin(self) -> Path:
        return self.component_dir("registry", "REGISTRY_VERSION") / "bin" / "registry"

    @property
    def registry(self) -> str:
        """Where the real nodes pull images from (containerd on the host: loopback works)."""
        return f"localhost:{self.registry_port}"

    @property
    def host_ip(self) -> str:
        return host_ip()

    @property
    def etcd_bin(self) -> Path:
        return self.component_dir("etcd", "ETCD_VERSION") / "bin" / "etcd"

    @property
    def kwok_dir(self) -> Path:
        return self.component_dir("kwok", "KWOK_VERSION")

    @property
    def minio_bin(self) -> Path:
        return self.component_dir("minio", "MINIO_VERSION") / "bin" / "minio"

    @property
    def helm_bin(self) -> Path:
        return self.component_dir("helm", "HELM_VERSION") / "bin" / "helm"

    @property
    def promtool_bin(self) -> Path:
        return self.component_dir("promtool", "PROMETHEUS_VERSION") / "bin" / "promtool"

    @property
    def kafka_libs(self) -> Path:
        return self.component_dir("kafka", "KAFKA_VERSION") / "libs"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    @property
    def bin(self) -> Path:
        return self.state / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def pod_env(self) -> dict[str, str]:
        """The stack's addresses as pods on the real nodes reach them: the host's address (the
        services listen there too), not 127.0.0.1, which is the pod's own loopback; the API
        server explicitly, as there is no kube-proxy behind the `kubernetes` Service."""
        ip = self.host_ip
        return {
            "KUBERNETES_SERVICE_HOST": ip,
            "KUBERNETES_SERVICE_PORT": str(self.apiserver_port),
            "IMAGEGEN_KAFKA_BOOTSTRAP": f"{ip}:{self.kafka_pods_port}",
            "IMAGEGEN_REDIS_URL": f"redis://{ip}:{self.redis_port}/0",
            "IMAGEGEN_S3_ENDPOINT": f"http://{ip}:{self.minio_port}",
        }

    def env(self) -> dict[str, str]:
        """What `dev/stack env` exports: enough for any shell or test to use the stack."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "IMAGEGEN_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
            "IMAGEGEN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "IMAGEGEN_S3_ENDPOINT": f"http://127.0.0.1:{self.minio_port}",
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "IMAGEGEN_STATE": str(self.state),
            "IMAGEGEN_REGISTRY": self.registry,
            "PATH": f"{self.bin}:{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        }


@functools.cache
def host_ip() -> str:
    """The machine's first global IPv4 address: a kubelet's node IP may not be loopback, and
    pods reach the stack's services there. IMAGEGEN_STACK_HOST_IP overrides it."""
    if os.environ.get("IMAGEGEN_STACK_HOST_IP"):
        return os.environ["IMAGEGEN_STACK_HOST_IP"]
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            return fields[3].split("/")[0]
    raise RuntimeError("no global IPv4 address on this machine (set IMAGEGEN_STACK_HOST_IP)")


def layout() -> Layout:
    state = Path(os.environ.get("IMAGEGEN_STATE", ROOT / ".stack")).resolve()
    cache = Path(os.environ.get("IMAGEGEN_CACHE", Path.home() / ".cache" / "imagegen-dev"))
    return Layout(state=state, cache=cache, versions=_versions())
