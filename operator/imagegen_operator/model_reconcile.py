"""One reconcile pass of an ImageModel: validate, resolve, prefetch, report who uses it.

Called by the ImageModel handlers (handlers.py). Who uses a model comes from Kopf's
pools-by-model index, not from listing every pool per pass; the status is patched only when it
changes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from imagegen_api import naming
from imagegen_api.base import first_error
from imagegen_api.specs import ImageModelSpec, ImageModelStatus, WorkerSpec
from pydantic import ValidationError

from . import builders
from .k8s import KubeError
from .runtime import Runtime
from .status import model_status, status_differs

log = logging.getLogger(__name__)


class ModelInUse(RuntimeError):
    """Deletion refused while pools serve the model; the message names them."""


def resolved_source(spec: ImageModelSpec) -> str:
    """The source with its pinned revision, as workers will load it."""
    if spec.revision and "@" not in spec.source:
        return f"{spec.source}@{spec.revision}"
    return spec.source


def job_state(job: Mapping[str, Any] | None) -> str:
    """Prefetch Job → Pending | InProgress | Ready | Failed."""
    if job is None:
        return "Pending"
    st = job.get("status") or {}
    for cond in st.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") == "Complete":
            return "Ready"
        if cond.get("status") == "True" and cond.get("type") == "Failed":
            return "Failed"
    return "InProgress" if st.get("active") or st.get("startTime") else "Pending"


def users(pools_by_model: Mapping[Any, Collection[Any]], namespace: str,
          model: str) -> list[str]:
    """Pools (not being deleted) that name the model, from the pools-by-model index."""
    return sorted({str(p) for p in pools_by_model.get((namespace, model)) or ()})


async def reconcile(rt: Runtime, body: Mapping[str, Any],
                    pools_by_model: Mapping[Any, Collection[Any]],
                    deleting: bool = False) -> list[str]:
    """Returns what it did (for Events). Raises ModelInUse when deleting a model in use."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    actions: list[str] = []
    problems: list[str] = []
    old: ImageModelStatus | None
    try:
        old = ImageModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        old = None
    spec: ImageModelSpec | None
    try:
        spec = ImageModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        problems.append(first_error(err))
        spec = None

    used_by = users(pools_by_model, namespace, name)
    blocked = None
    if deleting and used_by:
        blocked = (f"deletion waits: GenerationPool(s) {', '.join(used_by)} still serve this "
                   "model; remove it from their spec.models or delete them")

    cached = "n/a"
    if spec is not None and spec.prefetch is not None and not deleting:
        owner = builders.Owner(naming.API_VERSION, naming.IMAGEMODEL_KIND, name, meta["uid"])
        digest = builders.spec_hash(spec)
        try:
            pvc = builders.cache_pvc(namespace, name, spec, owner)
            if pvc is not None:
                await rt.kube.apply(pvc)
            job_name = naming.prefetch_job_name(name)
            job = await rt.kube.get("batch/v1", "Job", namespace, job_name)
            stale = job is not None and (job["metadata"].get("labels") or {}).get(
                naming.LABEL_SPEC_HASH) != digest
            if job is None or stale:
                if stale:
                    actions.append(f"prefetch Job {job_name} is for an older spec; replaced")
                    await rt.kube.delete("batch/v1", "Job", namespace, job_name)
                image = rt.config.defaults.worker_image or WorkerSpec().image
                manifest = builders.prefetch_job(namespace, name, spec, owner,
                                                 rt.config.defaults, image, digest)
                if manifest is not None:
                    job = await rt.kube.apply(manifest)
                    actions.append(f"prefetch Job {job_name} started into claim "
                                   f"{spec.prefetch.claim_name}")
            cached = job_state(job)
        except KubeError as err:
            problems.append(f"prefetch: {err}")
            cached = "Failed"

    status = model_status(
        generation, resolved_source=resolved_source(spec) if spec else "",
        cached=cached, used_by=used_by, problems=problems, deleting_blocked=blocked, old=old,
        now=datetime.now(UTC))
    wire = status.to_wire()
    if status_differs(wire, body.get("status")):
        await rt.kube.patch_status(naming.API_VERSION, naming.IMAGEMODEL_KIND, namespace, name,
                                   wire)
    if blocked:
        raise ModelInUse(blocked)
    return actions
