"""ControlNet requests: a request's `control` against the model's declared ControlNets, then
its control image fetched and checked.

`validate` calls `check` (pure: the name is declared, the family is served with a ControlNet,
the scale is in range, the image field has one source) and leaves a `ControlSpec` on the
request; `intake` then calls `resolve` in its validation thread (after the init image, which
may decide the size): fetch, decode, and the size must be the request's width x height (the
ControlNet reads the control image at the latents' resolution). Failures name the field.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from imagegen_api.families import FAMILIES
from imagegen_api.messages import ControlChoice, ImageInput
from imagegen_api.specs import CONTROL_SCALE_RANGE, CONTROLNET_FAMILIES, ImageModelSpec

from . import initimage


@dataclass(frozen=True)
class ControlError:
    field: str
    message: str
    limit: str


@dataclass(frozen=True)
class ControlSpec:
    """A checked `control`, its image not yet fetched."""

    name: str
    source: str  # the declared source: part of the cache key (other weights, other pixels)
    scale: float
    image: ImageInput


@dataclass(frozen=True, eq=False)
class ControlImage:
    """The decoded control image (RGB, the request's size) and its digest."""

    image: Any  # PIL.Image.Image
    sha256: str  # of the encoded bytes: part of the batch and cache keys


def check(choice: ControlChoice, spec: ImageModelSpec, *, model: str, has_init: bool,
          namespace: str, pool: str) -> ControlSpec | ControlError:
    if not FAMILIES[spec.pipeline].controlnet:
        return ControlError("control", f"control: model {model} (pipeline {spec.pipeline}) is "
                            "not served with a ControlNet", "pipelines: "
                            + ", ".join(CONTROLNET_FAMILIES))
    declared = {c.name: c for c in spec.controlnets}
    found = declared.get(choice.name)
    if found is None:
        return ControlError("control.name", f"control.name {choice.name!r} is not a ControlNet "
                            f"of model {model}", "one of: "
                            + (", ".join(declared) or "(the model declares none)"))
    if has_init:
        return ControlError("control", "control cannot be combined with init_image "
                            "(ControlNet serves text-to-image only)", "without init_image")
    scale = found.default_scale if choice.scale is None else choice.scale
    lo, hi = CONTROL_SCALE_RANGE
    if not math.isfinite(scale) or not lo <= scale <= hi:
        return ControlError("control.scale", f"control.scale {scale} is outside "
                            f"[{lo:g}, {hi:g}]", f"{lo:g}..{hi:g}")
    try:
        initimage.check_input("control.image", choice.image, namespace=namespace, pool=pool)
    except initimage.InputError as exc:
        return ControlError(exc.field, str(exc), exc.limit)
    return ControlSpec(name=choice.name, source=found.source, scale=float(scale),
                       image=choice.image)


def resolve(spec: ControlSpec, *, width: int, height: int, max_pixels: int,
            fetch: initimage.Fetch) -> ControlImage:
    """Fetch and decode the control image; InputError unless it is width x height."""
    raw = initimage.read_bytes("control.image", spec.image, fetch)
    image = initimage.decode("control.image", raw, max_pixels=max_pixels)
    w, h = image.size
    if (w, h) != (width, height):
        raise initimage.InputError("control.image", f"control.image is {w}x{h}, the request "
                                   f"is served at {width}x{height}", f"{width}x{height}")
    return ControlImage(image=image.convert("RGB"), sha256=hashlib.sha256(raw).hexdigest())
