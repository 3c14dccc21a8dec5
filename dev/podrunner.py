"""The local pod runner (dev only): turns pods labelled imagegen.dev/local-runner=true into real
local processes, so the operator's scaling decisions start and stop real workers on this machine.

The label is the dev stack's own: the product knows nothing of it. Whoever wants pods run here
puts it on them by the ordinary means a user has: a GenerationPool's `spec.worker.podLabels`
(manifests/examples/tiny-pool.yaml, bench/drain_scenario.py), the Helm chart's `podLabels` for the
operator itself (tests/integration/test_install.py), or a bare pod's own labels. KWOK's pod
stages (dev/kwok/pod-stages.yaml) leave pods with the label to this runner (Running, readiness
from the real probe) and make every other pod Ready at once.

For each such pod bound to a (KWOK) node it:
- starts container[0]'s command + args as a process (own process group, cwd = repo root, the
  project's .venv/bin first on PATH) with the pod's env resolved: literal values, valueFrom
  (configMapKeyRef, secretKeyRef, fieldRef) and envFrom; plus POD_NAME / POD_NAMESPACE;
- materialises configMap, secret and emptyDir volumes under .stack/pods/<ns>_<pod>/volumes/ and,
  since processes cannot share fixed paths such as /etc/imagegen, rewrites every env value and
  argument that starts with a volumeMount's mountPath to the local directory;
- gives the process its own free port as IMAGEGEN_HTTP_PORT and sends httpGet probes there;
- writes a kubeconfig holding a TokenRequest token of the pod's ServiceAccount (KUBECONFIG), so an
  operator run this way is subject to its real RBAC;
- reports readiness into the pod status (KWOK leaves these pods Running but not Ready; see
  dev/kwok/pod-stages.yaml), restarts a process that exits (restartCount, backoff);
- holds a finalizer on the pod while its process lives: on deletion it sends SIGTERM, waits the
  pod's grace period, then SIGKILL, and only then releases the pod.
Process output goes to .stack/logs/pods/<ns>_<pod>.log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("IMAGEGEN_STATE", ROOT / ".stack"))
LABEL = "imagegen.dev/local-runner"  # see the module docstring: set by tests and the demo
FINALIZER = "imagegen.dev/local-runner"
log = logging.getLogger("podrunner")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    grace: int
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    ready: bool | None = None
    transition_time: str = ""
    restarts: int = 0
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def key(self) -> str:
        return f"{self.namespace}_{self.name}"


class PodRunner:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.pods: dict[str, RunningPod] = {}
        # Stop tasks in flight (a reference keeps them from being garbage-collected).
        self._stops: set[asyncio.Task[None]] = set()

    # --- reconcile -------------------------------------------------------------------------

    async def run(self) -> None:
        (STATE / "pods").mkdir(parents=True, exist_ok=True)
        (STATE / "logs" / "pods").mkdir(parents=True, exist_ok=True)
        self._kill_orphans()
        while True:
            try:
                listing = await self.core.list_pod_for_all_namespaces(
                    label_selector=f"{LABEL}=true")
                seen = set()
                for pod in listing.items:
                    seen.add(pod.metadata.uid)
                    await self.reconcile(pod)
                for rp in list(self.pods.values()):
                    if rp.uid not in seen:
                        await self.stop(rp, reason="pod gone")
                (STATE / "podrunner.ready").touch()
                w = watch.Watch()
                async with w.stream(self.core.list_pod_for_all_namespaces,
                                    label_selector=f"{LABEL}=true",
                                    resource_version=listing.metadata.resource_version,
                                    timeout_seconds=300) as stream:
                    async for event in stream:
                        pod = event["object"]
                        if event["type"] == "DELETED":
                            rp = self.pods.get(pod.metadata.uid)
                            if rp:
                                await self.stop(rp, reason="pod deleted")
                        else:
                            await self.reconcile(pod)
            except (TimeoutError, ApiException, OSError) as err:
                log.warning("watch interrupted (%s); resyncing", err)
                await asyncio.sleep(1)

    async def reconcile(self, pod: Any) -> None:
        uid = pod.metadata.uid
        rp = self.pods.get(uid)
        if pod.metadata.deletion_timestamp is not None:
            if rp is not None:
                if not rp.stopping:
                    rp.stopping = True
                    task = asyncio.create_task(self.stop(rp, reason="pod terminating"))
                    self._stops.add(task)
                    task.add_done_callback(self._stops.discard)
            elif FINALIZER in (pod.metadata.finalizers or []):
                await self.release(pod.metadata.namespace, pod.metadata.name)
            return
        if rp is None and pod.spec.node_name:
            rp = RunningPod(pod.metadata.namespace, pod.metadata.name, uid,
                            int(pod.spec.termination_grace_period_seconds or 30))
            self.pods[uid] = rp
            rp.task = asyncio.create_task(self.supervise(rp, pod))

    # --- one pod ---------------------------------------------------------------------------

    async def supervise(self, rp: RunningPod, pod: Any) -> None:
        try:
            await self.hold(rp)
            argv, env, probe = await self.prepare(rp, pod)
        except Exception as err:
            log.error("pod %s/%s cannot run: %s", rp.namespace, rp.name, err)
            await self.set_ready(rp, False, f"LocalRunnerError: {err}")
            return
        backoff = 1.0
        while not rp.stopping:
            rp.log_path = STATE / "logs" / "pods" / f"{rp.key}.log"
            with rp.log_path.open("ab") as out:
                out.write(f"\n==== {time.strftime('%H:%M:%S')} start: {argv}\n".encode())
                out.flush()
                rp.proc = await asyncio.create_subprocess_exec(
                    *argv, env=env, cwd=str(ROOT), stdout=out, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
            (STATE / "pods" / rp.key / "pid").write_text(str(rp.proc.pid))
            log.info("started %s/%s pid %d port %d", rp.namespace, rp.name, rp.proc.pid, rp.port)
            prober = asyncio.create_task(self.probe_loop(rp, probe))
            code = await rp.proc.wait()
            prober.cancel()
            if rp.stopping:
                break
            rp.restarts += 1
            log.warning("%s/%s exited with %s; restarting in %.0fs", rp.namespace, rp.name,
                        code, backoff)
            await self.set_ready(rp, False, f"process exited with code {code}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)

    async def prepare(self, rp: RunningPod, pod: Any) -> tuple[list[str], dict[str, str], Any]:
        ns = rp.namespace
        c = pod.spec.containers[0]
        pod_dir = STATE / "pods" / rp.key
        vol_dir = pod_dir / "volumes"
        vol_dir.mkdir(parents=True, exist_ok=True)
        local_paths: dict[str, str] = {}
        volumes = {v.name: v for v in (pod.spec.volumes or [])}
        for vm in c.volume_mounts or []:
            v = volumes.get(vm.name)
            if v is None:
                continue
            target = vol_dir / vm.name
            target.mkdir(parents=True, exist_ok=True)
            if v.config_map is not None:
                cm = await self.core.read_namespaced_config_map(v.config_map.name, ns)
                self._write_items(target, cm.data or {}, v.config_map.items, b64=False)
            elif v.secret is not None:
                sec = await self.core.read_namespaced_secret(v.secret.secret_name, ns)
                self._write_items(target, sec.data or {}, v.secret.items, b64=True)
            local_paths[vm.mount_path.rstrip("/")] = str(target / (vm.sub_path or ""))

        def rewrite(value: str) -> str:
            for mount, local in sorted(local_paths.items(), key=lambda kv: -len(kv[0])):
                if value == mount or value.startswith(mount + "/"):
                    return local + value[len(mount):]
            return value

        env: dict[str, str] = {}
        for src in c.env_from or []:
            if src.config_map_ref is not None:
                cm = await self.core.read_namespaced_config_map(src.config_map_ref.name, ns)
                env.update({(src.prefix or "") + k: v for k, v in (cm.data or {}).items()})
            if src.secret_ref is not None:
                sec = await self.core.read_namespaced_secret(src.secret_ref.name, ns)
                env.update({(src.prefix or "") + k: base64.b64decode(v).decode()
                            for k, v in (sec.data or {}).items()})
        for e in c.env or []:
            value = await self._env_value(pod, e)
            if value is not None:
                env[e.name] = value
        env = {k: rewrite(v) for k, v in env.items()}
        rp.port = free_port()
        venv_bin = ROOT / ".venv" / "bin"
        keep = ("LANG", "LC_", "HOME", "TMPDIR")
        base = {k: v for k, v in os.environ.items() if k.startswith(keep)}
        # The dev cache holds builtin://shapes-sdxl's trained weights; a pod's HOME is a volume
        # of its own, so name the runner's cache explicitly.
        env.setdefault("IMAGEGEN_CACHE", os.environ.get("IMAGEGEN_CACHE")
                       or str(Path.home() / ".cache" / "imagegen-dev"))
        env = {**base, **env, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "POD_NAME": rp.name, "POD_NAMESPACE": ns, "IMAGEGEN_HTTP_PORT": str(rp.port),
               "PYTHONUNBUFFERED": "1"}
        env["KUBECONFIG"] = await self.service_account_kubeconfig(
            ns, pod.spec.service_account_name or "default", pod_dir)
        argv = [rewrite(a) for a in [*(c.command or []), *(c.args or [])]]
        if not argv:
            raise ValueError("container has no command: the runner cannot run an image entrypoint")
        return argv, env, c.readiness_probe

    @staticmethod
    def _write_items(target: Path, data: dict[str, str], items: Any, *, b64: bool) -> None:
        mapping = {i.key: i.path for i in items} if items else {k: k for k in data}
        for key, rel in mapping.items():
            if key in data:
                raw = base64.b64decode(data[key]) if b64 else data[key].encode()
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_bytes(raw)

    async def _env_value(self, pod: Any, e: Any) -> str | None:
        if e.value_from is None:
            return e.value or ""
        vf, ns = e.value_from, pod.metadata.namespace
        try:
            if vf.config_map_key_ref is not None:
                cm = await self.core.read_namespaced_config_map(vf.config_map_key_ref.name, ns)
                return (cm.data or {}).get(vf.config_map_key_ref.key)
            if vf.secret_key_ref is not None:
                sec = await self.core.read_namespaced_secret(vf.secret_key_ref.name, ns)
                raw = (sec.data or {}).get(vf.secret_key_ref.key)
                return base64.b64decode(raw).decode() if raw is not None else None
        except ApiException as err:
            optional = (vf.config_map_key_ref or vf.secret_key_ref).optional
            if err.status == 404 and optional:
                return None
            raise
        if vf.field_ref is not None:
            path = vf.field_ref.field_path
            fields = {"metadata.name": pod.metadata.name, "metadata.namespace": ns,
                      "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
                      "spec.serviceAccountName": pod.spec.service_account_name,
                      "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
            if path.startswith("metadata.labels['"):
                return (pod.metadata.labels or {}).get(path[len("metadata.labels['"):-2])
            if path.startswith("metadata.annotations['"):
                return (pod.metadata.annotations or {}).get(path[len("metadata.annotations['"):-2])
            return fields.get(path)
        return None

    async def service_account_kubeconfig(self, ns: str, sa: str, pod_dir: Path) -> str:
        req = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=86400))
        token = (await self.core.create_namespaced_service_account_token(sa, ns, req)).status.token
        cfg = self.api.configuration
        path = pod_dir / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "local", "cluster": {
                "server": cfg.host, "certificate-authority": str(STATE / "certs" / "ca.crt")}}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "local", "user": sa,
                                                      "namespace": ns}}],
        }))
        return str(path)

    # --- readiness -------------------------------------------------------------------------

    async def probe_loop(self, rp: RunningPod, probe: Any) -> None:
        period = float(probe.period_seconds or 10) if probe else 1.0
        delay = float(probe.initial_delay_seconds or 0) if probe else 0.0
        await asyncio.sleep(delay)
        asserted = 0.0
        while True:
            ok = await asyncio.to_thread(self._probe_once, rp, probe)
            # Re-assert now and then: KWOK retries a failed stage from a stale queue entry (seen
            # after its "podIPs" patch error) and can set Ready=False behind our back. An
            # unchanged patch is a no-op on the server.
            if ok != rp.ready or time.monotonic() - asserted > 5.0:
                await self.set_ready(rp, ok, "" if ok else "readiness probe failed")
                asserted = time.monotonic()
            await asyncio.sleep(min(period, 2.0) if not ok else period)

    @staticmethod
    def _probe_once(rp: RunningPod, probe: Any) -> bool:
        if rp.proc is None or rp.proc.returncode is not None:
            return False
        if probe is None:
            return True
        if probe.http_get is not None:
            path = probe.http_get.path or "/"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rp.port}{path}",
                                            timeout=float(probe.timeout_seconds or 1)) as resp:
                    return 200 <= resp.status < 400
            except OSError:
                return False
        if probe._exec is not None:
            import subprocess
            return subprocess.run(probe._exec.command, cwd=str(ROOT), check=False,
                                  capture_output=True, timeout=10).returncode == 0
        if probe.tcp_socket is not None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", rp.port), 1):
                return True
            return False
        return True

    async def set_ready(self, rp: RunningPod, ready: bool, message: str) -> None:
        changed = rp.ready != ready
        rp.ready = ready
        if changed or not rp.transition_time:
            rp.transition_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        now = rp.transition_time
        status = "True" if ready else "False"
        conds = [{"type": t, "status": status, "lastTransitionTime": now,
                  "reason": None if ready else "ContainersNotReady",
                  "message": None if ready else message}
                 for t in ("Ready", "ContainersReady")]
        body = {"status": {"conditions": conds}}
        try:
            pod = await self.core.read_namespaced_pod_status(rp.name, rp.namespace)
            statuses = []
            for cs in pod.status.container_statuses or []:
                d = self.api.sanitize_for_serialization(cs)
                d["ready"] = ready
                d["restartCount"] = rp.restarts
                statuses.append(d)
            if statuses:
                body["status"]["containerStatuses"] = statuses
            await self.core.patch_namespaced_pod_status(
                rp.name, rp.namespace, body,
                _content_type="application/strategic-merge-patch+json")
            if changed:
                log.info("%s/%s ready=%s %s", rp.namespace, rp.name, ready, message)
        except ApiException as err:
            if err.status != 404:
                log.warning("status patch of %s/%s failed: %s", rp.namespace, rp.name, err.reason)

    # --- finalizer and stop ----------------------------------------------------------------

    async def hold(self, rp: RunningPod) -> None:
        await self.core.patch_namespaced_pod(
            rp.name, rp.namespace, {"metadata": {"finalizers": [FINALIZER]}},
            _content_type="application/strategic-merge-patch+json")

    async def release(self, ns: str, name: str) -> None:
        try:
            await self.core.patch_namespaced_pod(
                name, ns, {"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}},
                _content_type="application/strategic-merge-patch+json")
        except ApiException as err:
            if err.status != 404:
                log.warning("releasing %s/%s failed: %s", ns, name, err.reason)

    async def stop(self, rp: RunningPod, *, reason: str) -> None:
        rp.stopping = True
        proc = rp.proc
        if proc is not None and proc.returncode is None:
            log.info("stopping %s/%s (%s): SIGTERM, grace %ss", rp.namespace, rp.name, reason,
                     rp.grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=rp.grace)
            except TimeoutError:
                log.warning("%s/%s did not exit in %ss: SIGKILL", rp.namespace, rp.name, rp.grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            log.info("%s/%s exited with %s", rp.namespace, rp.name, proc.returncode)
        if rp.task is not None and rp.task is not asyncio.current_task():
            rp.task.cancel()
        (STATE / "pods" / rp.key / "pid").unlink(missing_ok=True)
        self.pods.pop(rp.uid, None)
        await self.release(rp.namespace, rp.name)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(rp, reason="runner stopping")
                               for rp in list(self.pods.values())), return_exceptions=True)

    @staticmethod
    def _kill_orphans() -> None:
        """Processes left by a previous runner (killed hard) are stopped; pods get fresh ones."""
        for pidfile in (STATE / "pods").glob("*/pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            pidfile.unlink(missing_ok=True)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    async with client.ApiClient() as api:
        runner = PodRunner(api)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(runner.run())
        await stop.wait()
        task.cancel()
        await runner.stop_all()


if __name__ == "__main__":
    asyncio.run(main())
