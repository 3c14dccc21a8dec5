"""Wire messages between clients and workers (JSON, UTF-8, Kafka key = request_id): requests,
results, dead letters, the job record kept in Redis and the worker heartbeat the operator
aggregates. snake_case on the wire.

Requests are parsed leniently here (types only); limits against the model and pool are checked
by the worker's validator so that every rejection can name the field and the limit.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ResultStatus = Literal["succeeded", "failed", "rejected", "blocked", "expired"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "blocked", "expired"]
TERMINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "rejected", "blocked", "expired"}
)
WorkerState = Literal["starting", "loading", "ready", "draining", "stopped", "failed"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


# Request ids: what every Kafka key, Redis key and log line can carry as they are.
REQUEST_ID_CHARS = "A-Z a-z 0-9 . _ : -"
REQUEST_ID_MAX = 128
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

# A request's adapter weight: a LoRA's usual range (negative weights invert a style); the model's
# declared default weight (ImageModel.spec.loras[].weight) may go further, a request may not.
LORA_WEIGHT_RANGE = (-2.0, 2.0)


class LoraChoice(Message):
    """One adapter a request activates: the name the ImageModel declares it under, and a weight."""

    name: str
    weight: float = 1.0


# An init image or mask given inline: at most this many bytes once base64-decoded (512 KiB: a
# whole message must stay under 1 MiB, so larger images, or an image and a mask, go to S3).
IMAGE_INPUT_MAX_BYTES = 512 * 1024
# An init image or mask named by S3 key: at most this many bytes (read with a bounded range).
IMAGE_OBJECT_MAX_BYTES = 16 * 1024 * 1024


class ImageInput(Message):
    """An image a request brings (img2img init image, inpainting mask): exactly one of
    `s3_key` (an object below the pool's prefix <namespace>/<pool>/ in the pool's bucket) or
    `b64` (the encoded file, PNG/JPEG/WebP, base64; at most IMAGE_INPUT_MAX_BYTES decoded)."""

    s3_key: str | None = None
    b64: str | None = None


class ControlChoice(Message):
    """A ControlNet a request steers with: the name the ImageModel declares it under
    (spec.controlnets), the control image (its size must be the request's width x height) and
    the conditioning scale (specs.CONTROL_SCALE_RANGE; None: the declared defaultScale)."""

    name: str
    image: ImageInput
    scale: float | None = None


class GenerationRequest(Message):
    request_id: str = Field(min_length=1, max_length=REQUEST_ID_MAX, pattern=REQUEST_ID_PATTERN)
    prompt: str
    model: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int | None = None
    num_images: int = 1
    output_format: str = "png"  # png | webp | jpeg (jpg), checked by the worker's validator
    quality: int | None = None  # webp/jpeg 1..100; None: the pool's spec.output.quality
    tier: str | None = None
    submitted_at: float | None = None  # unix seconds
    deadline: float | None = None  # unix seconds; later → status=expired
    webhook: str | None = None
    # None: the model's declared adapters at their declared weights; []: no adapter.
    loras: list[LoraChoice] | None = None
    # img2img / inpainting: the image to start from (its size must equal width x height when
    # they are given; else they default to it), how much of it to repaint (0 < strength <= 1),
    # and an optional mask of the same size (white = repaint, black = keep).
    init_image: ImageInput | None = None
    strength: float | None = None  # None with an init image: 0.8
    mask: ImageInput | None = None
    # ControlNet (sdxl, sd15 models; text-to-image only): steer the layout with a control image.
    control: ControlChoice | None = None


class ErrorInfo(Message):
    code: str  # e.g. invalid_field, unknown_model, generation_failed
    message: str
    field: str | None = None
    limit: str | None = None
    # Blocked after generation (spec.safety.checker): what the checker saw and its score (0-1).
    reason: str | None = None
    score: float | None = None


class ImageRef(Message):
    key: str
    url: str
    width: int
    height: int
    seed: int
    sha256: str
    format: str = "png"


class Timings(Message):
    queue_ms: float = 0.0
    generate_ms: float = 0.0
    upload_ms: float = 0.0
    total_ms: float = 0.0


class GenerationResult(Message):
    request_id: str
    status: ResultStatus
    images: list[ImageRef] = Field(default_factory=list)
    error: ErrorInfo | None = None
    cache_hit: bool = False
    timings: Timings = Timings()
    worker: str | None = None
    model: str | None = None
    model_revision: str | None = None
    tier: str | None = None
    attempts: int = 1
    finished_at: float | None = None
    warnings: list[str] = Field(default_factory=list)  # served, but not quite as asked


class JobRecord(Message):
    """Redis hash imagegen:job:<request_id>; `result` holds the terminal result as JSON."""

    request_id: str
    state: JobState
    updated_at: float
    worker: str | None = None
    tier: str | None = None
    attempts: int = 0
    result: GenerationResult | None = None
    # The API key name that submitted the request through a gateway (written by the gateway
    # before it produces): GET /v1/generations/{id} answers that key only. None: not submitted
    # through a gateway.
    owner: str | None = None

    def to_hash(self) -> dict[str, str]:
        h = {
            "request_id": self.request_id,
            "state": self.state,
            "updated_at": repr(self.updated_at),
            "attempts": str(self.attempts),
        }
        if self.worker:
            h["worker"] = self.worker
        if self.tier:
            h["tier"] = self.tier
        if self.owner:
            h["owner"] = self.owner
        if self.result is not None:
            h["result"] = self.result.model_dump_json(exclude_none=True)
        return h

    @classmethod
    def from_hash(cls, h: dict[str, str] | dict[bytes, bytes]) -> JobRecord:
        d = {(k.decode() if isinstance(k, bytes) else k):
             (v.decode() if isinstance(v, bytes) else v) for k, v in h.items()}
        result = GenerationResult.model_validate_json(d["result"]) if d.get("result") else None
        return cls(
            request_id=d["request_id"],
            state=d["state"],
            updated_at=float(d.get("updated_at", 0)),
            worker=d.get("worker"),
            tier=d.get("tier"),
            attempts=int(d.get("attempts", 0)),
            result=result,
            owner=d.get("owner"),
        )


class DeadLetter(Message):
    """Value of a message on the dead-letter topic imagegen.<ns>.<pool>.dlq (key = request id,
    header error_code): the request a worker gave up on, and why."""

    request_id: str
    request: str  # the original message value, as text
    error: ErrorInfo
    attempts: int
    worker: str
    source: str  # topic:partition:offset
    failed_at: float  # unix seconds


class Heartbeat(Message):
    """One field per worker pod in imagegen:workers:<ns>/<pool>; stale after 3 intervals."""

    worker: str
    role: str | None = None  # warm | cold
    state: WorkerState
    ready: bool
    models: list[str] = Field(default_factory=list)
    model_revision: str | None = None
    loras: list[str] = Field(default_factory=list)  # adapters loaded: <model>/<adapter>
    in_flight: int = 0
    processed: int = 0
    failed: int = 0
    images_per_second: float = 0.0  # recent throughput (sliding window)
    # Counters since this process started (started_at): the operator's hourly figures.
    images: int = 0  # images generated
    cache_hits: int = 0  # requests answered from the cache
    cache_misses: int = 0  # seeded requests the cache could not answer
    blocked_images: int = 0  # images the safety checker flagged (never stored)
    batch_seconds_p50: float | None = None
    interval_seconds: float
    updated_at: float
    started_at: float

    def is_fresh(self, now: float) -> bool:
        return now - self.updated_at <= 3 * self.interval_seconds


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
