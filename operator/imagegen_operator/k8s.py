"""The only module that talks to the Kubernetes API (besides Kopf's own watching).

Server-side apply with field manager `imagegen-operator` and force: the operator owns what it
renders, so a manual edit of a child field it sets is reverted on the next pass. 404 and 409 are
translated here into return values / one exception type the handlers understand, and so are
timeouts and connection errors: every call has a total timeout (REQUEST_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from types import TracebackType
from typing import Any

import aiohttp
from imagegen_api import naming
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Every call ends within these (seconds): one hung request must never hold a pool's pass, and
# with it the pool's other handlers (deletion included), for longer.
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0

# apiVersion/kind → (path prefix, plural). Only what the operator manages or reads.
_RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("batch/v1", "Job"): "jobs",
    ("coordination.k8s.io/v1", "Lease"): "leases",  # leader election (leader.py)
    (naming.API_VERSION, naming.IMAGEMODEL_KIND): naming.IMAGEMODEL_PLURAL,
    (naming.API_VERSION, naming.GENERATIONPOOL_KIND): naming.GENERATIONPOOL_PLURAL,
}


class KubeError(RuntimeError):
    """An API call failed for a reason other than 'not found'; the message says which call."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {detail}")
        self.status = status


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = _RESOURCES[(api_version, kind)]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def _detail(err: ApiException) -> str:
    body: object = err.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return str(body or err.reason)[:500]


class Kube:
    """One ApiClient for the operator's lifetime: in-cluster credentials, else $KUBECONFIG."""

    def __init__(self) -> None:
        self._api: client.ApiClient | None = None

    async def __aenter__(self) -> Kube:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        if self._api is not None:
            return
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            self._api = client.ApiClient()
        else:
            self._api = await config.new_client_from_config()

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def api(self) -> client.ApiClient:
        if self._api is None:
            raise RuntimeError("Kube client used before open()")
        return self._api

    async def _call(self, what: str, method: str, path: str, *, body: Any = None,
                    query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json") -> Obj | None:
        try:
            # Both bounds: aiohttp's per request, asyncio's around the whole call (a hung
            # response body or TLS read included). A timeout is a KubeError like any failure.
            async with asyncio.timeout(REQUEST_TIMEOUT_S + 1):
                result = await self.api.call_api(
                    path, method, query_params=query or [], body=body,
                    header_params={"Content-Type": content_type, "Accept": "application/json"},
                    response_types_map={200: "object", 201: "object"},
                    auth_settings=["BearerToken"], _return_http_data_only=True,
                    _request_timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S,
                                                           sock_connect=CONNECT_TIMEOUT_S),
                )
        except ApiException as err:
            if err.status == 404:
                return None
            raise KubeError(what, err.status, _detail(err)) from err
        except TimeoutError as err:
            raise KubeError(what, None, f"no answer within {REQUEST_TIMEOUT_S:g} s") from err
        except aiohttp.ClientError as err:
            raise KubeError(what, None, f"{type(err).__name__}: {err}") from err
        return result if isinstance(result, dict) else None

    async def apply(self, obj: Obj, field_manager: str = naming.FIELD_MANAGER) -> Obj:
        """Server-side apply one object (create or update); returns the object as stored.
        `field_manager`: another one only for a hand-over (pool_apply)."""
        meta = obj["metadata"]
        what = f"apply {obj['kind']} {meta['namespace']}/{meta['name']}"
        path = _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result = await self._call(
            what, "PATCH", path, body=obj, content_type="application/apply-patch+yaml",
            query=[("fieldManager", field_manager), ("force", "true")],
        )
        if result is None:
            raise KubeError(what, 404, "namespace or resource type missing")
        return result

    async def create(self, obj: Obj) -> Obj:
        """POST one object; KubeError 409 when it already exists."""
        meta = obj["metadata"]
        what = f"create {obj['kind']} {meta['namespace']}/{meta['name']}"
        result = await self._call(what, "POST",
                                  _path(obj["apiVersion"], obj["kind"], meta["namespace"]),
                                  body=obj)
        if result is None:
            raise KubeError(what, 404, "namespace or resource type missing")
        return result

    async def replace(self, obj: Obj) -> Obj:
        """PUT one object; with metadata.resourceVersion set, KubeError 409 when the stored
        object changed since it was read (optimistic concurrency)."""
        meta = obj["metadata"]
        what = f"replace {obj['kind']} {meta['namespace']}/{meta['name']}"
        result = await self._call(what, "PUT", _path(obj["apiVersion"], obj["kind"],
                                                     meta["namespace"], meta["name"]), body=obj)
        if result is None:
            raise KubeError(what, 404, f"{obj['kind']} not found")
        return result

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return await self._call(f"get {kind} {namespace}/{name}", "GET",
                                _path(api_version, kind, namespace, name))

    async def list(self, api_version: str, kind: str, namespace: str,
                   selector: dict[str, str] | None = None) -> list[Obj]:
        query = []
        if selector:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items())))
        result = await self._call(f"list {kind} in {namespace}", "GET",
                                  _path(api_version, kind, namespace), query=query)
        return list((result or {}).get("items", []))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete (background propagation); a missing object is not an error."""
        await self._call(f"delete {kind} {namespace}/{name}", "DELETE",
                         _path(api_version, kind, namespace, name),
                         body={"propagationPolicy": "Background"})

    async def annotate(self, api_version: str, kind: str, namespace: str, name: str,
                       annotations: dict[str, str]) -> None:
        """Merge-patch metadata.annotations; a missing object is not an error."""
        await self._call(f"annotate {kind} {namespace}/{name}", "PATCH",
                         _path(api_version, kind, namespace, name),
                         body={"metadata": {"annotations": annotations}},
                         content_type="application/merge-patch+json")

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: Obj) -> Obj | None:
        """Merge-patch the status subresource; None when the object is gone."""
        path = _path(api_version, kind, namespace, name) + "/status"
        return await self._call(f"patch {kind} {namespace}/{name} status", "PATCH", path,
                                body={"status": status},
                                content_type="application/merge-patch+json")

    async def read_key(self, kind: str, namespace: str, name: str, key: str) -> str:
        """A value from a ConfigMap or Secret key; KubeError naming the reference if missing."""
        obj = await self.get("v1", kind, namespace, name)
        if obj is None:
            raise KubeError(f"read {kind} {namespace}/{name}", 404, f"{kind} not found")
        if kind == "Secret":
            raw = (obj.get("data") or {}).get(key)
            value = base64.b64decode(raw).decode() if raw is not None else None
        else:
            value = (obj.get("data") or {}).get(key)
        if value is None:
            raise KubeError(f"read {kind} {namespace}/{name}", 404, f"key {key!r} not found")
        return str(value)
