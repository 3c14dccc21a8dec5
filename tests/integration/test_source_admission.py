"""Model sources that would leave their volume or read kernel files are refused by the real API
server (CEL rules from specs.SOURCE_RULES), with the rule's message naming the field.

The worker refuses the same URIs when it parses a source, and refuses devices, fifos and
oversized folders when it reads one (tests/unit/worker/test_pipelines_sources.py); this file
proves that a manifest carrying them never reaches the operator.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import Kubectl, unique

MODEL = """
apiVersion: imagegen.dev/v1alpha1
kind: ImageModel
metadata: {{name: {name}}}
spec:
  source: {source}
{loras}"""

PARENT = "a '..' path segment is not allowed in pvc:// or file:// sources"
KERNEL = "file:// sources may not read /dev, /proc or /sys"

REFUSED = [
    ("pvc://claim/../..", "spec.source", PARENT),
    ("pvc://claim/models/../../etc", "spec.source", PARENT),
    ("pvc://claim/%2e%2e/etc", "spec.source", PARENT),
    ("file:///dev/zero", "spec.source", KERNEL),
    ("file:///proc/self/environ", "spec.source", KERNEL),
]


def apply(kubectl: Kubectl, namespace: str, source: str, loras: str = "") -> tuple[int, str]:
    manifest = MODEL.format(name=unique("src"), source=source, loras=loras)
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(("source", "field", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_escaping_and_kernel_sources_are_refused(kubectl: Kubectl, crds: None,
                                                 k8s_namespace: str, source: str, field: str,
                                                 message: str) -> None:
    code, err = apply(kubectl, k8s_namespace, source)
    assert code != 0, f"the API server accepted source {source}"
    assert field in err and message in err, err


def test_a_lora_source_is_held_to_the_same_rules(kubectl: Kubectl, crds: None,
                                                 k8s_namespace: str) -> None:
    loras = "  loras:\n  - {name: style, source: 'pvc://claim/../../secrets'}\n"
    code, err = apply(kubectl, k8s_namespace, "builtin://tiny-sdxl", loras)
    assert code != 0 and "spec.loras[0].source" in err and PARENT in err, err


def test_confined_local_sources_are_accepted(kubectl: Kubectl, crds: None,
                                             k8s_namespace: str) -> None:
    for source in ("pvc://claim/models/sdxl..v2", "file:///srv/models/sdxl", "pvc://claim"):
        code, err = apply(kubectl, k8s_namespace, source)
        assert code == 0, f"{source} refused: {err}"
