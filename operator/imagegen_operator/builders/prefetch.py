"""ImageModel with `prefetch` → the cache PVC (when a size is given) and a download Job.

The Job runs the worker image's own `prefetch` command with the claim mounted at the cache root,
so workers that mount the same claim find the weights where they look.
"""

from __future__ import annotations

from typing import Any

from imagegen_api import naming
from imagegen_api.specs import ImageModelSpec

from .context import OperatorDefaults, Owner
from .workerconfig import config_hash

Manifest = dict[str, Any]

JOB_BACKOFF_LIMIT = 3


def _labels(model: str) -> dict[str, str]:
    return {
        naming.LABEL_NAME: "imagegen-prefetch",
        naming.LABEL_INSTANCE: model,
        naming.LABEL_MANAGED_BY: "imagegen-operator",
        naming.LABEL_COMPONENT: "prefetch",
    }


def cache_pvc(namespace: str, model: str, spec: ImageModelSpec, owner: Owner) -> Manifest | None:
    """Only when the manifest asks the operator to create the claim (prefetch.size set).

    Not owned by the model: the weights outlive a model re-created under the same name.
    """
    del owner
    pf = spec.prefetch
    if pf is None or pf.size is None:
        return None
    pvc_spec: Manifest = {
        "accessModes": [pf.access_mode],
        "resources": {"requests": {"storage": pf.size}},
    }
    if pf.storage_class_name:
        pvc_spec["storageClassName"] = pf.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": pf.claim_name, "namespace": namespace, "labels": _labels(model)},
        "spec": pvc_spec,
    }


def spec_hash(spec: ImageModelSpec) -> str:
    """Which spec a prefetch Job downloads for; a Job's pod template is immutable, so a new
    hash means a new Job."""
    return config_hash(spec.model_dump_json())


def prefetch_job(namespace: str, model: str, spec: ImageModelSpec, owner: Owner,
                 defaults: OperatorDefaults, image: str, revision_hash: str) -> Manifest | None:
    pf = spec.prefetch
    if pf is None:
        return None
    env: list[Manifest] = [{"name": naming.ENV_MODEL_CACHE, "value": naming.MODEL_CACHE_DIR},
                           {"name": "HOME", "value": "/tmp"}]
    if defaults.s3_endpoint:
        env.append({"name": naming.ENV_S3_ENDPOINT, "value": defaults.s3_endpoint})
    if defaults.s3_credentials_secret:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": defaults.s3_credentials_secret, "key": key, "optional": True}}})
    labels = {**_labels(model), naming.LABEL_SPEC_HASH: revision_hash}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.prefetch_job_name(model),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": JOB_BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "prefetch",
                        "image": image,
                        "command": ["imagegen-worker", "prefetch", "--model", model,
                                    "--model-config", spec.model_dump_json(by_alias=True,
                                                                           exclude_none=True),
                                    "--dest", naming.MODEL_CACHE_DIR],
                        "env": env,
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [
                            {"name": "model-cache", "mountPath": naming.MODEL_CACHE_DIR},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "model-cache",
                         "persistentVolumeClaim": {"claimName": pf.claim_name}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
