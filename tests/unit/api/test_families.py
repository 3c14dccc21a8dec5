"""Pipeline families in the ImageModel spec: builtin sources, default samplers, sizes and
negative prompts a family cannot use are refused (pydantic here; the CRD's CEL twins are the
same table, checked on the control plane by tests/integration/test_crds.py)."""

from __future__ import annotations

import pytest
from imagegen_api.families import BUILTIN_FAMILIES, FAMILIES, family
from imagegen_api.specs import SAMPLERS, ImageModelSpec, _family_rules
from pydantic import ValidationError


def test_the_table_covers_every_sampler_and_family() -> None:
    assert {s for f in FAMILIES.values() for s in f.samplers} == set(SAMPLERS)
    assert set(BUILTIN_FAMILIES.values()) <= set(FAMILIES)
    with pytest.raises(KeyError, match="known: sdxl"):
        family("sd2")


@pytest.mark.parametrize(("fields", "message"), [
    ({"source": "builtin://tiny-sd3"},
     "builtin://tiny-sd3 is an SD3 pipeline: set pipeline to sd3"),
    ({"source": "builtin://tiny-flux", "pipeline": "sd3"},
     "builtin://tiny-flux is a Flux pipeline: set pipeline to flux"),
    ({"source": "builtin://tiny-sdxl", "pipeline": "flux"},
     "builtin://tiny-sdxl is an SDXL pipeline: set pipeline to sdxl"),
    ({"source": "hf://org/sd3", "pipeline": "sd3", "defaults": {"sampler": "ddim"}},
     "defaults.sampler must be one of euler, heun for pipeline sd3"),
    ({"source": "hf://org/xl", "pipeline": "sdxl", "defaults": {"sampler": "heun"}},
     "defaults.sampler must be one of euler, euler_a, ddim, dpmpp_2m, lcm for pipeline sdxl"),
    ({"source": "hf://org/flux", "pipeline": "flux", "defaults": {"width": 1000}},
     "defaults.width and defaults.height must be multiples of 16 for pipeline flux"),
    ({"source": "hf://org/flux", "pipeline": "flux", "defaults": {"negativePrompt": "ugly"}},
     "pipeline flux reads no negative prompt"),
])
def test_what_a_family_cannot_do_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        ImageModelSpec.model_validate(fields)


def test_every_pydantic_refusal_has_a_cel_rule_with_the_same_message() -> None:
    messages = {str(r["message"]) for r in _family_rules()}  # type: ignore[index]
    assert "builtin://tiny-flux is a Flux pipeline: set pipeline to flux" in messages
    assert "defaults.sampler must be one of euler for pipeline flux" in messages
    assert "pipeline flux reads no negative prompt: leave defaults.negativePrompt empty" in messages


@pytest.mark.parametrize("source", ["builtin://tiny-sd3", "builtin://tiny-flux"])
def test_flow_builtins_parse_with_their_family(source: str) -> None:
    fam = BUILTIN_FAMILIES[source.removeprefix("builtin://")]
    spec = ImageModelSpec.model_validate({"source": source, "pipeline": fam})
    assert spec.defaults.sampler in FAMILIES[fam].samplers
