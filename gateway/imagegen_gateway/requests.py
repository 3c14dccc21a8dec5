"""Pure: an HTTP body → a request message for the pool's tier topic, and the OpenAI-shaped
answers. No I/O; called by `app` for every POST, unit-tested on its own.

A body is checked before anything is produced: OpenAI's fields (model, prompt, n, size "WxH",
response_format, user, quality, output_format, output_compression) plus ours (negative_prompt,
steps, guidance, sampler, seed, tier, request_id, deadline, loras, init_image, mask, strength,
control).
OpenAI's `quality` scales the model's default steps (QUALITY_STEPS; explicit `steps` win);
`output_compression` is the worker's lossy `quality` (webp/jpeg only). Limits are the contract's
(imagegen_api.specs: side bounds and multiple, guidance range, samplers, output formats) and the
model's own (ModelLimits: max pixels, steps, images per request), the same the worker's validator
applies; prompt tokens need the model's tokenizer and are left to the worker (its rejection
comes back as a 400), as are the init image, mask and strength (decoding is the worker's) and
the control image and scale (a ControlNet's name is checked here against the model's).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from imagegen_api.messages import (
    LORA_WEIGHT_RANGE,
    REQUEST_ID_PATTERN,
    ControlChoice,
    GenerationRequest,
    GenerationResult,
    ImageInput,
    LoraChoice,
)
from imagegen_api.specs import GUIDANCE_RANGE, MIN_SIDE, OUTPUT_FORMATS, SAMPLERS, SIDE_MULTIPLE
from imagegen_api.workerconfig import WorkerConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_TIER = "fast"
MAX_PROMPT_CHARS = 32_000  # OpenAI's own bound for a prompt; the worker counts tokens
# OpenAI's `quality` → a multiple of the model's default steps (rounded, 1..maxSteps): dall-e-3's
# standard/hd and gpt-image-1's low/medium/high; auto (and none) leaves the model's default.
QUALITY_STEPS: dict[str, float | None] = {
    "low": 0.5, "medium": 1.0, "standard": 1.0, "high": 1.5, "hd": 1.5, "auto": None}
LOSSY_FORMATS = ("webp", "jpeg")


class GatewayError(Exception):
    """An answer in OpenAI's error shape: status, message, type, param (the field), code."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str = "invalid_request", kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


class ImageBody(BaseModel):
    """An init image or mask in a body: the message's ImageInput, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_key: str | None = None
    b64: str | None = None

    def message(self) -> ImageInput:
        return ImageInput(s3_key=self.s3_key, b64=self.b64)


class ControlBody(BaseModel):
    """A ControlNet choice in a body: the message's ControlChoice, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63)
    image: ImageBody
    scale: float | None = None

    def message(self) -> ControlChoice:
        return ControlChoice(name=self.name, image=self.image.message(), scale=self.scale)


class ImagesBody(BaseModel):
    """POST /v1/images/generations and POST /v1/generations (one shape for both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    user: str | None = Field(None, max_length=256)
    quality: str | None = None  # QUALITY_STEPS
    output_format: str | None = None  # png | jpeg | webp (jpg: jpeg)
    output_compression: int | None = Field(None, ge=0, le=100)  # webp/jpeg: the quality
    # OpenAI fields we accept and ignore (their value has no meaning for our models).
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    safety_identifier: str | None = None
    stream: Literal[False] | None = None
    # Ours, through extra_body.
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    tier: str | None = None
    request_id: str | None = Field(None, pattern=REQUEST_ID_PATTERN)
    deadline: float | None = None
    loras: list[LoraChoice] | None = Field(None, max_length=16)
    # img2img / inpainting, as in the request message (checked by the worker).
    init_image: ImageBody | None = None
    mask: ImageBody | None = None
    strength: float | None = None
    # ControlNet, as in the request message (the image and scale are checked by the worker).
    control: ControlBody | None = None
    # Called on the terminal state (delivery.py); checked against SSRF at submit (webhooks.py).
    webhook: str | None = Field(None, min_length=1, max_length=2048)


def parse_size(size: str) -> tuple[int, int]:
    """'1024x768' → (1024, 768); raises GatewayError naming `size`."""
    w, sep, h = size.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise GatewayError(400, f"size {size!r} must be WIDTHxHEIGHT, e.g. 1024x1024",
                           param="size", code="invalid_size")
    return int(w), int(h)


def parse_body(raw: bytes) -> ImagesBody:
    try:
        return ImagesBody.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "missing":
            raise GatewayError(400, f"{field} is required", param=field,
                               code="missing_field") from None
        if err["type"].startswith("json"):
            raise GatewayError(400, f"body is not valid JSON: {err['msg']}",
                               code="invalid_json") from None
        if err["type"] == "extra_forbidden":
            raise GatewayError(400, f"unknown field {field}", param=field,
                               code="unknown_field") from None
        limit = err.get("ctx")
        more = f" (limit: {', '.join(f'{k}={v}' for k, v in limit.items())})" if limit else ""
        raise GatewayError(400, f"{field}: {err['msg']}{more}", param=field,
                           code="invalid_field") from None


@dataclass(frozen=True)
class Planned:
    """A checked body: the message to produce, its tier, and how to answer."""

    request: GenerationRequest
    tier: str
    response_format: str


def plan(body: ImagesBody, pool: WorkerConfig, *, request_id: str, now: float) -> Planned:
    """The request message for `body`, or GatewayError naming the field and the limit."""
    model = body.model or pool.default_model
    spec = pool.model(model)
    if spec is None:
        raise GatewayError(404, f"model {model!r} is not served by pool {pool.pool} "
                           f"(one of: {', '.join(m.name for m in pool.models)})",
                           param="model", code="model_not_found")
    tiers = [t.name for t in pool.kafka.tiers]
    tier = body.tier or (DEFAULT_TIER if DEFAULT_TIER in tiers else tiers[0])
    if tier not in tiers:
        raise GatewayError(400, f"tier {tier!r} does not exist in pool {pool.pool} "
                           f"(one of: {', '.join(tiers)})", param="tier", code="unknown_tier")
    d, lim = spec.defaults, spec.limits
    size = check_size(body, d.width, d.height, lim.max_pixels, model)
    if body.n > lim.max_images_per_request:
        raise GatewayError(400, f"n {body.n} exceeds model {model}'s limit of "
                           f"{lim.max_images_per_request} (maxImagesPerRequest)", param="n",
                           code="invalid_field")
    if body.steps is not None and not 1 <= body.steps <= lim.max_steps:
        raise GatewayError(400, f"steps {body.steps} must be 1..{lim.max_steps} (maxSteps of "
                           f"model {model})", param="steps", code="invalid_field")
    lo, hi = GUIDANCE_RANGE
    if body.guidance is not None and not (math.isfinite(body.guidance)
                                          and lo <= body.guidance <= hi):
        raise GatewayError(400, f"guidance {body.guidance} is outside [{lo:g}, {hi:g}]",
                           param="guidance", code="invalid_field")
    if body.sampler is not None and body.sampler not in SAMPLERS:
        raise GatewayError(400, f"sampler {body.sampler!r} is not one of: "
                           f"{', '.join(SAMPLERS)}", param="sampler", code="invalid_field")
    fmt, quality = output(body)
    steps = body.steps if body.steps is not None else quality_steps(body.quality, d.steps,
                                                                   lim.max_steps)
    if body.deadline is not None and body.deadline <= now:
        raise GatewayError(400, "deadline is in the past", param="deadline",
                           code="invalid_field")
    request = GenerationRequest(
        request_id=body.request_id or request_id, prompt=body.prompt, model=model,
        negative_prompt=body.negative_prompt, width=size[0], height=size[1], steps=steps,
        guidance=body.guidance, sampler=body.sampler, seed=body.seed, num_images=body.n,
        output_format=fmt, quality=quality, tier=tier, submitted_at=now,
        deadline=body.deadline, loras=check_loras(body.loras, [a.name for a in spec.loras], model),
        webhook=body.webhook, strength=body.strength,
        init_image=body.init_image.message() if body.init_image else None,
        mask=body.mask.message() if body.mask else None,
        control=check_control(body.control, [c.name for c in spec.controlnets], model),
    )
    return Planned(request=request, tier=tier, response_format=body.response_format)


def check_size(body: ImagesBody, width: int, height: int, max_pixels: int, model: str
               ) -> tuple[int | None, int | None]:
    """(width, height) of the request: `size`, else the model's default; with an init image and
    no `size`, none (the worker takes the init image's and checks it)."""
    if body.size is None:
        if body.init_image is not None:
            return None, None
    else:
        width, height = parse_size(body.size)
    for side in (width, height):
        if side < MIN_SIDE or side % SIDE_MULTIPLE:
            raise GatewayError(400, f"size {width}x{height}: each side must be at least "
                               f"{MIN_SIDE} and a multiple of {SIDE_MULTIPLE}", param="size",
                               code="invalid_size")
    if width * height > max_pixels:
        raise GatewayError(400, f"size {width}x{height} = {width * height} pixels exceeds "
                           f"model {model}'s limit of {max_pixels} (maxPixels)",
                           param="size", code="invalid_size")
    return width, height


def quality_steps(quality: str | None, default_steps: int, max_steps: int) -> int | None:
    """OpenAI's `quality` → steps (None: the model's default); GatewayError naming `quality`."""
    if quality is None:
        return None
    if quality not in QUALITY_STEPS:
        raise GatewayError(400, f"quality {quality!r} is not one of: "
                           f"{', '.join(QUALITY_STEPS)}", param="quality", code="invalid_field")
    factor = QUALITY_STEPS[quality]
    if factor is None or factor == 1.0:
        return None
    return max(1, min(max_steps, round(default_steps * factor)))


def output(body: ImagesBody) -> tuple[str, int | None]:
    """(output_format, the worker's quality): `output_compression` 0..100 is the lossy quality
    (0 → 1, the encoders' lowest); with png it has no meaning and is refused."""
    fmt = (body.output_format or "png").lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in OUTPUT_FORMATS:
        raise GatewayError(400, f"output_format {body.output_format!r} is not one of: "
                           f"{', '.join(OUTPUT_FORMATS)}", param="output_format",
                           code="invalid_field")
    if body.output_compression is None:
        return fmt, None
    if fmt not in LOSSY_FORMATS:
        raise GatewayError(400, f"output_compression applies to output_format "
                           f"{' or '.join(LOSSY_FORMATS)}, not {fmt}",
                           param="output_compression", code="invalid_field")
    return fmt, max(1, body.output_compression)


def check_control(control: ControlBody | None, declared: list[str], model: str
                  ) -> ControlChoice | None:
    """The body's ControlNet as the message's; an undeclared name is a 400 naming it."""
    if control is None:
        return None
    if control.name not in declared:
        raise GatewayError(400, f"control.name {control.name!r} is not a ControlNet of model "
                           f"{model} (one of: {', '.join(declared) or 'none declared'})",
                           param="control.name", code="invalid_field")
    return control.message()


def check_loras(loras: list[LoraChoice] | None, declared: list[str], model: str
                ) -> list[LoraChoice] | None:
    """The adapters a body names must be the model's (the worker checks the same)."""
    lo, hi = LORA_WEIGHT_RANGE
    for i, lora in enumerate(loras or []):
        if lora.name not in declared:
            raise GatewayError(400, f"loras[{i}].name {lora.name!r} is not an adapter of model "
                               f"{model} (one of: {', '.join(declared) or 'none declared'})",
                               param=f"loras[{i}].name", code="invalid_field")
        if not (math.isfinite(lora.weight) and lo <= lora.weight <= hi):
            raise GatewayError(400, f"loras[{i}].weight {lora.weight} is outside "
                               f"[{lo:g}, {hi:g}]", param=f"loras[{i}].weight",
                               code="invalid_field")
    return loras


def result_error(result: GenerationResult) -> GatewayError | None:
    """None for a succeeded result; else the error a synchronous caller gets."""
    if result.status == "succeeded":
        return None
    err = result.error
    message = err.message if err else f"request {result.status}"
    param = err.field if err else None
    if err and err.limit:
        message = f"{message} (limit: {err.limit})"
    if result.status == "rejected":
        return GatewayError(400, message, param=param, code=err.code if err else "rejected")
    if result.status == "blocked":
        # The prompt (the blocklist), or the images (the safety checker after generation).
        return GatewayError(400, message, param=param or "prompt",
                            code="content_policy_violation")
    if result.status == "expired":
        return GatewayError(504, message, code="deadline_exceeded", kind="timeout_error")
    return GatewayError(500, message, code=err.code if err else "generation_failed",
                        kind="server_error")


def images_response(result: GenerationResult, b64: list[str] | None = None) -> dict[str, Any]:
    """OpenAI's ImagesResponse: `created` and one `data` entry per image (url or b64_json)."""
    data: list[dict[str, Any]] = []
    for i, img in enumerate(result.images):
        entry: dict[str, Any] = {"b64_json": b64[i]} if b64 is not None else {"url": img.url}
        data.append(entry)
    return {"created": int(result.finished_at or time.time()), "data": data}
