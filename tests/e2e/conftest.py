"""End-to-end fixtures: the integration fixtures (real stack, real operator) plus a namespace
ready for real worker pods (the tiny model and the S3 credentials Secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import conftest as integration
from tests.integration.conftest import *  # noqa: F403 - the stack and operator fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_ns(kubectl: integration.Kubectl, stack: integration.StackEnv, operator: object,
              k8s_namespace: str) -> str:
    kubectl("create", "secret", "generic", "imagegen-s3", "-n", k8s_namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={stack.s3_access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.s3_secret_key}")
    kubectl("apply", "-n", k8s_namespace, "-f", str(ROOT / "manifests/examples/tiny-model.yaml"))
    return k8s_namespace
