"""Real kubelet nodes of the local stack: one containerd + one kubelet per node, joined to the
stack's API server, running pods from the images dev/images.sh builds.

Why two nodes: the warm pool runs on on-demand nodes and the cold pool on tainted spot nodes; one
kubelet is one node, so each capacity type gets its own (own containerd socket and root, kubelet
ports, root dir and cgroup root). Every real node carries the taint `imagegen.dev/real-node`, so
only pools that ask for real nodes land there (the KWOK nodes stay for the scale scenarios).

Host changes and how `dev/stack down` undoes them (docs/dev-stack.md):
- sysctls the kubelet rewrites (protectKernelDefaults: false) and ip_forward (bridge CNI): the
  values before the first node started are saved in <state>/nodes/sysctls.json and restored;
- the CNI bridges `imagegen<N>` and pod network namespaces: pods are deleted through the kubelet
  (CNI DEL), then leftover tasks are killed through containerd and the bridges removed;
- cgroups under /sys/fs/cgroup/<controller>/imagegen-<node>: removed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import DEV, Layout

REAL_NODE_TAINT = "imagegen.dev/real-node"
BRIDGE_PREFIX = "imagegen"  # one bridge per node (imagegen0, imagegen1): own gateway each
POD_SUBNET = "10.89.0.0/16"
# The sysctls a kubelet with protectKernelDefaults: false sets, and the bridge CNI's forward.
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops",
           "net/ipv4/ip_forward")
GPUS_PER_NODE = 2


@dataclass(frozen=True)
class RealNode:
    name: str
    capacity_type: str  # on-demand | spot
    index: int

    @property
    def kubelet_port(self) -> int:
        return 10250 + 10 * self.index

    @property
    def healthz_port(self) -> int:
        return 10248 + 10 * self.index

    @property
    def subnet(self) -> str:
        return f"10.89.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def cgroup_root(self) -> str:
        return f"/imagegen-{self.name}"

    def labels(self) -> dict[str, str]:
        return {
            "imagegen.dev/capacity-type": self.capacity_type,
            REAL_NODE_TAINT: "true",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        }

    def taints(self) -> list[dict[str, str]]:
        taints = [{"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}]
        if self.capacity_type == "spot":
            taints.append({"key": "imagegen.dev/spot", "value": "true", "effect": "NoSchedule"})
        return taints


ALL_NODES = (RealNode("real-ondemand-0", "on-demand", 0), RealNode("real-spot-0", "spot", 1))


def nodes() -> tuple[RealNode, ...]:
    """IMAGEGEN_STACK_REAL_NODES (0, 1 or 2; default 2) real nodes: on-demand first."""
    count = int(os.environ.get("IMAGEGEN_STACK_REAL_NODES", "2"))
    return ALL_NODES[: max(0, min(count, len(ALL_NODES)))]


def node_dir(lay: Layout, node: RealNode) -> Path:
    return lay.state / "nodes" / node.name


def socket_path(lay: Layout, node: RealNode) -> Path:
    return node_dir(lay, node) / "containerd.sock"


def ctr(lay: Layout, node: RealNode, *args: str, timeout: float = 60,
        stdin: int | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["ctr", "--address", str(socket_path(lay, node)), "--namespace", "k8s.io", *args],
        capture_output=True, text=True, timeout=timeout, stdin=stdin)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


# --- containerd ------------------------------------------------------------------------------


def pause_image(lay: Layout) -> str:
    return f"{lay.registry}/imagegen-pause:{lay.versions['K8S_VERSION']}"


def prepare_containerd(lay: Layout, node: RealNode) -> None:
    d = node_dir(lay, node)
    for sub in ("root", "state", "cni", "opt"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    _save_sysctls(lay)
    # The bridge CNI: a bridge and a subnet per node (the host routes between them).
    (d / "cni" / "10-imagegen.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": "imagegen",
        "plugins": [
            {"type": "bridge", "bridge": node.bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": node.subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(d / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2))
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    (d / "containerd.toml").write_text(f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
[grpc]
  address = "{socket_path(lay, node)}"
[ttrpc]
  address = "{d / 'containerd-ttrpc.sock'}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{pause_image(lay)}"
  # Without it every sandbox fails here ("can't get final child's PID from pipe: EOF"): no
  # CAP_SYS_RESOURCE, so lowering oom_score_adj is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / 'cni'}"
  # The dev stack's registry speaks plain HTTP on loopback (containerd runs on the host).
  [{cri}.registry.mirrors."{lay.registry}"]
    endpoint = ["http://127.0.0.1:{lay.registry_port}"]
""")


def containerd_argv(lay: Layout, node: RealNode) -> list[str]:
    return [shutil.which("containerd") or "/usr/bin/containerd",
            "--config", str(node_dir(lay, node) / "containerd.toml"), "--log-level", "warn"]


def containerd_healthy(lay: Layout, node: RealNode) -> bool:
    try:
        ctr(lay, node, "version", timeout=5)
        return True
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def image_present(lay: Layout, node: RealNode, ref: str) -> bool:
    return bool(ctr(lay, node, "images", "ls", "-q", f"name=={ref}", timeout=30).strip())


def pull(lay: Layout, node: RealNode, ref: str) -> float:
    """Pre-pull (and unpack) an image from the registry, as the kubelet would; seconds spent,
    0 when present. Only the layers the node lacks are fetched."""
    if image_present(lay, node, ref):
        return 0.0
    started = time.monotonic()
    ctr(lay, node, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref,
        timeout=1800)
    return time.monotonic() - started


def pull_pause(lay: Layout, node: RealNode) -> None:
    pull(lay, node, pause_image(lay))


def push_images(which: tuple[str, ...] = ("operator", "worker", "gateway")) -> list[str]:
    """The images dev/images.sh built for these sources, pushed to the registry (those built)."""
    refs = []
    for name in which:
        proc = subprocess.run([str(DEV / "images.sh"), "push", name], capture_output=True,
                              text=True, timeout=1800)
        if proc.returncode == 0 and proc.stdout.strip():
            refs.append(proc.stdout.strip().splitlines()[-1])
    return refs


# --- kubelet ---------------------------------------------------------------------------------


def prepare_kubelet(lay: Layout, node: RealNode) -> None:
    from . import certs

    d = node_dir(lay, node)
    (d / "kubelet").mkdir(parents=True, exist_ok=True)
    certs.ensure_node(lay.certs, node.name, lay.host_ip)
    certs.write_kubeconfig(d / "kubeconfig", lay.apiserver_url, lay.certs,
                           user=f"node-{node.name}")
    _make_cgroup_root(node)
    taints = "".join(f"\n- key: {t['key']}\n  value: \"{t['value']}\"\n  effect: {t['effect']}"
                     for t in node.taints())
    (d / "kubelet.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {lay.host_ip}
port: {node.kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {node.healthz_port}
tlsCertFile: {lay.certs / f'node-{node.name}.crt'}
tlsPrivateKeyFile: {lay.certs / f'node-{node.name}.key'}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {lay.certs / 'ca.crt'}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
cgroupRoot: {node.cgroup_root}
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://{socket_path(lay, node)}
imageServiceEndpoint: unix://{socket_path(lay, node)}
localStorageCapacityIsolation: true
evictionHard: {{memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%",
  nodefs.inodesFree: "2%"}}
imageGCHighThresholdPercent: 85
imageGCLowThresholdPercent: 80
makeIPTablesUtilChains: false
protectKernelDefaults: false
serializeImagePulls: false
maxPods: 32
clusterDomain: cluster.local
{_cluster_dns()}resolvConf: /etc/resolv.conf
registerWithTaints:{taints}
""")


def _cluster_dns() -> str:
    """No cluster DNS service here: pods get the host's resolver (ClusterFirst would otherwise
    fall back with a MissingClusterDNS warning on every pod). Pods use IP addresses anyway."""
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver" and ":" not in fields[1]:
                return f"clusterDNS: [{fields[1]}]\n"
    except OSError:
        pass
    return ""


def kubelet_argv(lay: Layout, node: RealNode) -> list[str]:
    d = node_dir(lay, node)
    labels = ",".join(f"{k}={v}" for k, v in node.labels().items())
    return [str(lay.kubelet_bin), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={d / 'kubeconfig'}", f"--root-dir={d / 'kubelet'}",
            f"--hostname-override={node.name}", f"--node-ip={lay.host_ip}",
            f"--node-labels={labels}", "--v=1"]


def advertise_gpus(lay: Layout, node: RealNode) -> None:
    """The documented way to advertise an extended resource without a device plugin: patch the
    node's status capacity; the kubelet copies it to allocatable and keeps it."""
    from .components import _kubectl

    _kubectl(lay, "get", "node", node.name)  # RuntimeError until the kubelet registered it
    patch = json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu",
                         "value": str(GPUS_PER_NODE)}])
    _kubectl(lay, "patch", "node", node.name, "--subresource=status", "--type=json",
             "-p", patch)
    # `dev/stack down` cordoned it (so drained pods stayed away): open for pods again.
    _kubectl(lay, "uncordon", node.name)


def kubelet_healthy(lay: Layout, node: RealNode) -> bool:
    from .components import _kubectl

    try:
        out = _kubectl(lay, "get", "node", node.name, "-o", "jsonpath="
                       "{.status.conditions[?(@.type=='Ready')].status} "
                       "{.status.allocatable.nvidia\\.com/gpu}")
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return out.split() == ["True", str(GPUS_PER_NODE)]


# --- host state --------------------------------------------------------------------------------


def _sysctls_file(lay: Layout) -> Path:
    return lay.state / "nodes" / "sysctls.json"


def _save_sysctls(lay: Layout) -> None:
    path = _sysctls_file(lay)
    if path.exists():
        return  # saved when the first node started: those are the host's own values
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: Path(f"/proc/sys/{k}").read_text().strip() for k in SYSCTLS}))


def restore_sysctls(lay: Layout) -> list[str]:
    path = _sysctls_file(lay)
    if not path.exists():
        return []
    restored = []
    for key, value in json.loads(path.read_text()).items():
        target = Path(f"/proc/sys/{key}")
        if target.read_text().strip() != value:
            target.write_text(value)
            restored.append(f"{key.replace('/', '.')}={value}")
    path.unlink()
    return restored


def _cgroup_dirs(node: RealNode) -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # unified (v2) only
        return [base / node.cgroup_root.lstrip("/")]
    return [base / c / node.cgroup_root.lstrip("/") for c in sorted(os.listdir(base))
            if (base / c).is_dir() and os.path.ismount(base / c)]


def _make_cgroup_root(node: RealNode) -> None:
    """The kubelet refuses a cgroupRoot that does not exist in every hierarchy."""
    for d in _cgroup_dirs(node):
        d.mkdir(exist_ok=True)
        if d.parent.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((d.parent / f).read_text())


def _remove_cgroups(node: RealNode) -> None:
    for top in _cgroup_dirs(node):
        if not top.exists():
            continue
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def drain_pods(lay: Layout, node: RealNode, wait: float = 60.0) -> None:
    """Delete the node's pods through the API so its kubelet stops them properly (preStop,
    SIGTERM, CNI DEL); cordoned first so their controllers' replacements stay Pending."""
    from .components import _kubectl

    try:
        _kubectl(lay, "cordon", node.name)
        _kubectl(lay, "delete", "pods", "--all-namespaces", "--wait=false",
                 f"--field-selector=spec.nodeName={node.name}")
    except (RuntimeError, subprocess.TimeoutExpired):
        return  # API server or node gone: the containerd clean-up below does the rest
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            left = _kubectl(lay, "get", "pods", "--all-namespaces", "-o", "name",
                            f"--field-selector=spec.nodeName={node.name}").split()
        except (RuntimeError, subprocess.TimeoutExpired):
            return
        if not left:
            return
        time.sleep(1)


def kill_tasks(lay: Layout, node: RealNode) -> None:
    """Whatever containers remain (the kubelet is gone): killed and deleted through containerd,
    sandboxes included, before containerd itself stops (its shims outlive it otherwise)."""
    try:
        tasks = ctr(lay, node, "tasks", "ls", "-q", timeout=20).split()
    except (RuntimeError, subprocess.TimeoutExpired):
        tasks = []
    for task in tasks:
        ctr(lay, node, "tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=20)
    for task in tasks:
        for _ in range(20):
            if ctr(lay, node, "tasks", "delete", task, check=False, timeout=20) == "" and \
                    task not in ctr(lay, node, "tasks", "ls", "-q", check=False, timeout=20):
                break
            time.sleep(0.25)


def kill_shims(lay: Layout, node: RealNode) -> int:
    sock = str(socket_path(lay, node))
    killed = 0
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"containerd-shim" in cmd[0] and sock.encode() in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def unmount_under(path: Path) -> None:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target.startswith(str(path) + "/"):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def remove_netns(lay: Layout) -> None:
    """Pod network namespaces containerd left (named cni-<uuid> under /var/run/netns)."""
    for ns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").exists() else []:
        subprocess.run(["umount", "-l", str(ns)], capture_output=True)
        ns.unlink(missing_ok=True)


def remove_bridges() -> None:
    for n in ALL_NODES:
        subprocess.run(["ip", "link", "delete", n.bridge], capture_output=True)
    # The bridge plugin's masquerade chains (CNI-*) of pods whose CNI DEL never ran.
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    for chain in sorted(set(re.findall(r"^:(CNI-[0-9a-f]+)", rules, re.M))):
        for line in rules.splitlines():
            if line.startswith("-A POSTROUTING") and f"-j {chain}" in line:
                subprocess.run(["iptables", "-t", "nat", "-D", *shlex.split(line)[1:]],
                               capture_output=True)
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


def cleanup_node(lay: Layout, node: RealNode) -> None:
    """After kubelet and containerd stopped: leftovers on the host."""
    kill_shims(lay, node)
    unmount_under(node_dir(lay, node))
    _remove_cgroups(node)
