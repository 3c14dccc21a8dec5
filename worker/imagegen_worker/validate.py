"""Request validation: the bytes of one Kafka message → a fully resolved request or a rejection.

Pure (no Kafka, Redis or torch): called by `intake` for every fetched message, before the cache
and the scheduler. Model defaults are applied here, so everything downstream sees complete
parameters. Every rejection names the offending field and the limit it broke; the caller turns it
into a result (status rejected, expired or blocked) and commits the offset, so nothing is lost
and nothing is retried.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from imagegen_api.families import FAMILIES
from imagegen_api.messages import (
    REQUEST_ID_CHARS,
    REQUEST_ID_MAX,
    REQUEST_ID_PATTERN,
    ErrorInfo,
    GenerationRequest,
    ResultStatus,
)
from imagegen_api.specs import GUIDANCE_RANGE, MIN_SIDE, OUTPUT_FORMATS
from imagegen_api.workerconfig import WorkerConfig
from pydantic import ValidationError

from . import adapters, initimage, longprompt
from . import control as controls

MAX_SEED = 2**63 - 1
# Sizes are refused before anything costly (JSON parsing, tokenising) looks at them.
MAX_REQUEST_BYTES = 1024 * 1024  # a whole message value; Kafka's default max.message.bytes
PROMPT_BYTES_PER_TOKEN = 16  # generous: no tokenizer's token spans more bytes than this
MAX_ERROR_MESSAGE = 500  # characters of a rejection's message
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
MAX_DEAD_LETTER_REQUEST_BYTES = 64 * 1024  # a dead letter embeds at most this much of a request

# (model name, text) → number of tokens the model's tokenizer produces.
TokenCounter = Callable[[str, str], int]
# model name → tokens its text encoder reads (longer prompts are served cut, with a warning).
PromptWindow = Callable[[str], int]


@dataclass(frozen=True)
class ValidRequest:
    """A request with every parameter resolved against the model defaults."""

    request_id: str
    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seed: int | None  # None: unseeded, seeds derived from the id (jobs.py), never cached
    num_images: int
    output_format: str
    tier: str
    submitted_at: float | None
    deadline: float | None
    webhook: str | None
    loras: tuple[tuple[str, float], ...] = ()  # (adapter, weight) by name, no zero weight
    warnings: tuple[str, ...] = ()  # copied into the result (a prompt served truncated)
    quality: int = 90  # webp/jpeg quality: the request's or the pool's spec.output.quality
    watermark: bool = True  # the pool's spec.output.watermark
    init: initimage.InitSpec | None = None  # img2img / inpainting, before fetching (intake)
    # The decoded init image and mask, set by intake (initimage.resolve) before queueing.
    conditioning: initimage.Conditioning | None = field(default=None, compare=False)
    control: controls.ControlSpec | None = None  # ControlNet, before fetching (intake)
    # The decoded control image, set by intake (control.resolve) before queueing.
    control_image: controls.ControlImage | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Rejection:
    """Why a message is answered without generation."""

    request_id: str
    status: ResultStatus  # rejected | expired | blocked
    error: ErrorInfo
    tier: str
    model: str | None = None


Outcome = ValidRequest | Rejection


def validate(
    value: bytes | None,
    *,
    key: bytes | None,
    tier: str,
    config: WorkerConfig,
    count_tokens: TokenCounter,
    now: float,
    fallback_id: str,
    prompt_window: PromptWindow | None = None,
) -> Outcome:
    """Validate one message value.

    `key` is the Kafka key (the request id by contract) and names the request when the body is
    unreadable; `fallback_id` is used when neither does. `tier` is the tier of the topic the
    message came from: it is the tier the request is scheduled and reported in.
    """
    key_id = _decode_key(key) or fallback_id

    def reject(code: str, message: str, field: str | None, limit: str | None,
               request_id: str | None = None, status: ResultStatus = "rejected",
               model: str | None = None) -> Rejection:
        return Rejection(
            request_id=request_id or key_id,
            status=status,
            error=ErrorInfo(code=code, message=message[:MAX_ERROR_MESSAGE], field=field,
                            limit=limit),
            tier=tier,
            model=model,
        )

    # --- structure -----------------------------------------------------------------------------
    if value is None:
        return reject("invalid_json", "message has no value", None, "a JSON object")
    if len(value) > MAX_REQUEST_BYTES:
        return reject("limit_exceeded", f"message is {len(value)} bytes long, over the limit of "
                      f"{MAX_REQUEST_BYTES}", None, f"{MAX_REQUEST_BYTES} bytes")
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return reject("invalid_json", f"message is not valid JSON: {exc}", None, "a JSON object")
    if not isinstance(body, dict):
        return reject("invalid_json", "message must be a JSON object", None, "a JSON object")
    body_id = body.get("request_id")
    if is_request_id(body_id):
        key_id = str(body_id)
    try:
        req = GenerationRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "missing":
            return reject("missing_field", f"{field} is required", field, "required")
        if field == "request_id":  # the value is not echoed: it may not even be encodable
            return reject("invalid_field", f"request_id must be 1 to {REQUEST_ID_MAX} of "
                          f"{REQUEST_ID_CHARS}", field, REQUEST_ID_PATTERN)
        return reject("invalid_field", f"{field}: {err['msg']}", field, _type_limit(err))

    rid = req.request_id

    def fail(code: str, message: str, field: str, limit: str,
             status: ResultStatus = "rejected", model: str | None = None) -> Rejection:
        return reject(code, message, field, limit, request_id=rid, status=status, model=model)

    if not req.prompt.strip():
        return fail("missing_field", "prompt must not be empty", "prompt", "required")

    # --- model and tier ------------------------------------------------------------------------
    model_name = req.model or config.default_model
    spec = config.model(model_name)
    known = [m.name for m in config.models]
    if spec is None:
        return fail("unknown_model", f"model {model_name!r} is not served by pool "
                    f"{config.pool}", "model", "one of: " + ", ".join(known))
    tiers = [t.name for t in config.kafka.tiers]
    if req.tier is not None and req.tier not in tiers:
        return fail("unknown_tier", f"tier {req.tier!r} does not exist in pool {config.pool}",
                    "tier", "one of: " + ", ".join(tiers), model=model_name)

    # --- deadline ------------------------------------------------------------------------------
    if req.deadline is not None and req.deadline <= now:
        return fail("deadline_exceeded",
                    f"deadline passed {now - req.deadline:.1f}s before the request was served",
                    "deadline", "in the future", status="expired", model=model_name)

    # --- parameters against the model ----------------------------------------------------------
    d, lim = spec.defaults, spec.limits
    family = FAMILIES[spec.pipeline]  # samplers, side multiple, negative prompt
    width = d.width if req.width is None else req.width
    height = d.height if req.height is None else req.height
    multiple = family.side_multiple
    for name, side in (("width", width), ("height", height)):
        if side < MIN_SIDE:
            return fail("invalid_field", f"{name} {side} is below {MIN_SIDE}", name,
                        f">= {MIN_SIDE}", model=model_name)
        if side % multiple:
            return fail("invalid_field", f"{name} {side} is not a multiple of {multiple} "
                        f"(pipeline {spec.pipeline})", name, f"multiple of {multiple}",
                        model=model_name)
    if width * height > lim.max_pixels:
        return fail("limit_exceeded", f"{width}x{height} = {width * height} pixels exceeds the "
                    f"model's limit of {lim.max_pixels}", "width,height",
                    f"maxPixels={lim.max_pixels}", model=model_name)

    steps = d.steps if req.steps is None else req.steps
    if steps < 1:
        return fail("invalid_field", f"steps {steps} must be at least 1", "steps", ">= 1",
                    model=model_name)
    if steps > lim.max_steps:
        return fail("limit_exceeded", f"steps {steps} exceeds the model's limit of "
                    f"{lim.max_steps}", "steps", f"maxSteps={lim.max_steps}", model=model_name)

    guidance = d.guidance if req.guidance is None else req.guidance
    lo, hi = GUIDANCE_RANGE
    if not math.isfinite(guidance) or not lo <= guidance <= hi:
        return fail("invalid_field", f"guidance {guidance} is outside [{lo:g}, {hi:g}]",
                    "guidance", f"{lo:g}..{hi:g}", model=model_name)

    sampler = d.sampler if req.sampler is None else req.sampler
    if sampler not in family.samplers:
        return fail("invalid_field", f"sampler {sampler!r} cannot be used by model {model_name} "
                    f"(pipeline {spec.pipeline})", "sampler",
                    "one of: " + ", ".join(family.samplers), model=model_name)
    if req.negative_prompt and not family.negative_prompt:
        return fail("invalid_field", f"model {model_name} (pipeline {spec.pipeline}) reads no "
                    "negative prompt: its guidance is distilled", "negative_prompt",
                    "empty", model=model_name)

    if req.num_images < 1:
        return fail("invalid_field", f"num_images {req.num_images} must be at least 1",
                    "num_images", ">= 1", model=model_name)
    if req.num_images > lim.max_images_per_request:
        return fail("limit_exceeded", f"num_images {req.num_images} exceeds the model's limit "
                    f"of {lim.max_images_per_request}", "num_images",
                    f"maxImagesPerRequest={lim.max_images_per_request}", model=model_name)

    fmt = req.output_format.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in OUTPUT_FORMATS:
        return fail("invalid_field", f"unknown output_format {req.output_format!r}",
                    "output_format", "one of: " + ", ".join(OUTPUT_FORMATS), model=model_name)
    quality = config.output.quality if req.quality is None else req.quality
    if not 1 <= quality <= 100:
        return fail("invalid_field", f"quality {quality} is outside 1..100", "quality",
                    "1..100", model=model_name)

    if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
        return fail("invalid_field", f"seed {req.seed} is outside [0, 2^63-1]", "seed",
                    "0..2^63-1", model=model_name)

    chosen = adapters.resolve(req.loras, list(spec.loras))
    if isinstance(chosen, adapters.AdapterError):
        return fail("invalid_field", chosen.message, chosen.field, chosen.limit,
                    model=model_name)

    init: initimage.InitSpec | None = None
    if req.init_image is None:
        for name, given in (("strength", req.strength), ("mask", req.mask)):
            if given is not None:
                return fail("invalid_field", f"{name} needs an init_image", name,
                            "only with init_image", model=model_name)
    else:
        strength = initimage.DEFAULT_STRENGTH if req.strength is None else req.strength
        if not math.isfinite(strength) or not 0 < strength <= 1:
            return fail("invalid_field", f"strength {strength} is outside (0, 1]", "strength",
                        "0 < strength <= 1", model=model_name)
        try:
            for name, given in (("init_image", req.init_image), ("mask", req.mask)):
                if given is not None:
                    initimage.check_input(name, given, namespace=config.namespace,
                                          pool=config.pool)
        except initimage.InputError as exc:
            return fail(exc.code, str(exc), exc.field, exc.limit, model=model_name)
        init = initimage.InitSpec(image=req.init_image, mask=req.mask, strength=float(strength),
                                  size_given=req.width is not None or req.height is not None)

    controlled: controls.ControlSpec | None = None
    if req.control is not None:
        checked_control = controls.check(req.control, spec, model=model_name,
                                        has_init=init is not None, namespace=config.namespace,
                                        pool=config.pool)
        if isinstance(checked_control, controls.ControlError):
            return fail("invalid_field", checked_control.message, checked_control.field,
                        checked_control.limit, model=model_name)
        controlled = checked_control

    negative = d.negative_prompt if req.negative_prompt is None else req.negative_prompt
    warnings: list[str] = []
    max_bytes = lim.max_prompt_tokens * PROMPT_BYTES_PER_TOKEN
    for name, text in (("prompt", req.prompt), ("negative_prompt", negative)):
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > max_bytes:  # refused before the tokenizer spends seconds on it
            return fail("limit_exceeded", f"{name} is {size} bytes long, over the model's limit "
                        f"of {max_bytes} ({PROMPT_BYTES_PER_TOKEN} per token)", name,
                        f"maxPromptTokens={lim.max_prompt_tokens}", model=model_name)
    for name, text in (("prompt", req.prompt), ("negative_prompt", negative)):
        if not text:
            continue
        tokens = count_tokens(model_name, text)
        if tokens > lim.max_prompt_tokens:
            return fail("limit_exceeded", f"{name} is {tokens} tokens long, over the model's "
                        f"limit of {lim.max_prompt_tokens}", name,
                        f"maxPromptTokens={lim.max_prompt_tokens}", model=model_name)
        if prompt_window is not None:
            cut = longprompt.truncation_warning(name, tokens, prompt_window(model_name))
            if cut:
                warnings.append(cut)

    # --- safety --------------------------------------------------------------------------------
    if config.safety.enabled and config.safety.blocklist:
        pattern = blocklist_pattern(tuple(config.safety.blocklist))
        # The model's default negative prompt is the operator's, not the caller's: not checked.
        checked = (("prompt", req.prompt), ("negative_prompt", req.negative_prompt or ""))
        for name, text in checked:
            if text and pattern.search(text):
                return fail("blocked", f"{name} matches the pool's blocklist", name,
                            "safety.blocklist", status="blocked", model=model_name)

    return ValidRequest(
        request_id=rid,
        model=model_name,
        prompt=req.prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=steps,
        guidance=float(guidance),
        sampler=sampler,
        seed=req.seed,
        num_images=req.num_images,
        output_format=fmt,
        quality=quality,
        watermark=config.output.watermark,
        tier=tier,
        submitted_at=req.submitted_at,
        deadline=req.deadline,
        webhook=req.webhook,
        loras=chosen,
        warnings=tuple(warnings),
        init=init,
        control=controlled,
    )


@lru_cache(maxsize=16)
def blocklist_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive regex matching any term as a whole word or phrase.

    Whitespace inside a phrase matches any run of whitespace; a term never matches inside a
    longer word ("cat" does not match "concatenate").
    """
    parts = [_phrase(t) for t in terms if t.strip()]
    if not parts:
        return re.compile(r"(?!x)x")  # matches nothing
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def _phrase(term: str) -> str:
    return r"\s+".join(re.escape(w) for w in term.split())


def is_request_id(value: object) -> bool:
    """A usable request id: 1..128 of A-Z a-z 0-9 . _ : - (messages.REQUEST_ID_PATTERN)."""
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


def _decode_key(key: bytes | None) -> str | None:
    if not key or len(key) > REQUEST_ID_MAX:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    return text if is_request_id(text) else None


def _type_limit(err: object) -> str | None:
    ctx = err.get("ctx") if isinstance(err, dict) else None
    if isinstance(ctx, dict) and ctx:
        return ", ".join(f"{k}={v}" for k, v in ctx.items())
    etype = err.get("type") if isinstance(err, dict) else None
    return str(etype) if etype else None


def describe(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Counts per status, for logs: {"accepted": 3, "rejected": 1}."""
    counts: dict[str, int] = {}
    for o in outcomes:
        name = "accepted" if isinstance(o, ValidRequest) else o.status
        counts[name] = counts.get(name, 0) + 1
    return counts


def bounded_request(value: bytes | None, limit: int = MAX_DEAD_LETTER_REQUEST_BYTES) -> str:
    """A message value as text for a dead letter, cut to `limit` bytes (marked when cut)."""
    raw = value or b""
    text = raw[:limit].decode("utf-8", errors="replace")
    if len(raw) > limit:
        text += f"…[{len(raw) - limit} more bytes cut]"
    return text
