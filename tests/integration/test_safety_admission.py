"""spec.safety.checker is validated by the real API server (the generated CRD: threshold bounds,
the source pattern and rules, the CEL rule tying it to safety.enabled), each refusal naming the
field; server-side dry runs, so no pool is created.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import Kubectl, unique

POOL = """
apiVersion: imagegen.dev/v1alpha1
kind: GenerationPool
metadata: {{name: {name}}}
spec:
  models: [tiny]
  safety: {safety}
"""

REFUSED = [
    ("{checker: {source: 'builtin://redness', threshold: 1.5}}", "spec.safety.checker.threshold",
     "less than or equal to 1"),
    ("{checker: {source: 'builtin://redness', threshold: -0.1}}", "spec.safety.checker.threshold",
     "greater than or equal to 0"),
    ("{checker: {source: 'builtin://tiny-sdxl'}}", "spec.safety.checker.source", "should match"),
    ("{checker: {source: 'pvc://claim/../secrets'}}", "spec.safety.checker.source",
     "a '..' path segment is not allowed"),
    ("{checker: {threshold: 0.4}}", "spec.safety.checker.source", "Required value"),
    ("{enabled: false, checker: {source: 'builtin://redness'}}", "spec.safety",
     "safety.checker is set while safety.enabled is false"),
]


def apply(kubectl: Kubectl, namespace: str, safety: str) -> tuple[int, str]:
    manifest = POOL.format(name=unique("safety"), safety=safety)
    proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest,
                   check=False)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(("safety", "field", "message"), REFUSED, ids=[r[1] + ":" + r[2][:20]
                                                                       for r in REFUSED])
def test_bad_checkers_are_refused_naming_the_field(kubectl: Kubectl, crds: None,
                                                   k8s_namespace: str, safety: str, field: str,
                                                   message: str) -> None:
    code, err = apply(kubectl, k8s_namespace, safety)
    assert code != 0, f"the API server accepted safety {safety}"
    assert field in err and message in err, err


@pytest.mark.parametrize("safety", [
    "{checker: {source: 'builtin://redness', threshold: 0.3}}",
    "{checker: {source: 'hf://CompVis/stable-diffusion-safety-checker'}}",
    "{blocklist: [x], checker: {source: 'pvc://models/safety', threshold: 1}}",
    "{enabled: false}",
])
def test_good_checkers_are_accepted(kubectl: Kubectl, crds: None, k8s_namespace: str,
                                    safety: str) -> None:
    code, err = apply(kubectl, k8s_namespace, safety)
    assert code == 0, f"{safety} refused: {err}"
