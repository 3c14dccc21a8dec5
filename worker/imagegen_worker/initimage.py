"""Init images and masks (img2img, inpainting): from what a request names to checked pixels.

`validate` checks the shape of the fields (one source each, strength in range, inline size) and
leaves an `InitSpec` on the request; `intake` then calls `resolve` (in a thread: decoding is CPU
work), which fetches an S3 object when one is named, decodes, and checks sizes. Every failure is
an `InputError` naming the field and the limit, answered as a rejection.

Size rule: the init image's size must equal the request's width x height when the request gives
them; when it gives neither, the size is the init image's (checked like a requested size). A mask
must have the init image's size. Masks are read as greyscale: white = repaint, black = keep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

from imagegen_api.messages import IMAGE_INPUT_MAX_BYTES, IMAGE_OBJECT_MAX_BYTES, ImageInput
from imagegen_api.naming import object_prefix
from imagegen_api.specs import MIN_SIDE, SIDE_MULTIPLE
from PIL import Image, UnidentifiedImageError

DEFAULT_STRENGTH = 0.8  # diffusers' default: most of the image repainted, its layout kept
FORMATS = ("PNG", "JPEG", "WEBP")

# key → the object's first `limit + 1` bytes (None: no such object).
Fetch = Callable[[str, int], bytes | None]


class InputError(ValueError):
    def __init__(self, field: str, message: str, limit: str, code: str = "invalid_field"):
        super().__init__(message)
        self.field = field
        self.limit = limit
        self.code = code


@dataclass(frozen=True)
class InitSpec:
    """What a request asks for, checked but not yet fetched or decoded."""

    image: ImageInput
    mask: ImageInput | None
    strength: float
    size_given: bool  # width or height in the request: the init image must match it


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Decoded inputs of an img2img / inpainting request (RGB image, L mask)."""

    image: Image.Image
    mask: Image.Image | None
    strength: float
    image_sha256: str  # of the encoded bytes: part of the cache key
    mask_sha256: str | None

    @property
    def mode(self) -> str:
        return "inpaint" if self.mask is not None else "img2img"


def b64_limit_chars(limit: int = IMAGE_INPUT_MAX_BYTES) -> int:
    """Characters of base64 that decode to at most `limit` bytes."""
    return 4 * ((limit + 2) // 3)


def check_input(field: str, given: ImageInput, *, namespace: str, pool: str) -> None:
    """One source, an inline payload under the limit, an S3 key below the pool's prefix."""
    if (given.s3_key is None) == (given.b64 is None):
        raise InputError(field, f"{field} needs exactly one of s3_key or b64", "one of s3_key, b64")
    if given.b64 is not None and len(given.b64) > b64_limit_chars():
        raise InputError(f"{field}.b64", f"{field}.b64 is {len(given.b64)} characters, over "
                         f"the limit of {IMAGE_INPUT_MAX_BYTES} bytes decoded "
                         f"({b64_limit_chars()} characters); put larger images in S3",
                         f"{IMAGE_INPUT_MAX_BYTES} bytes", code="limit_exceeded")
    if given.s3_key is not None:
        prefix = object_prefix(namespace, pool)
        key = given.s3_key
        if not key.startswith(prefix) or ".." in key.split("/") or len(key) > 1024:
            # The pool's credentials may reach other pools' objects: never read those.
            raise InputError(f"{field}.s3_key", f"{field}.s3_key {key[:200]!r} is not below "
                             f"the pool's prefix {prefix!r}", f"below {prefix}")


def read_bytes(field: str, given: ImageInput, fetch: Fetch) -> bytes:
    """The encoded image, from the inline payload or the S3 object (bounded)."""
    if given.b64 is not None:
        try:
            data = base64.b64decode(given.b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"{field}.b64", f"{field}.b64 is not valid base64: {exc}",
                             "base64 of a PNG, JPEG or WebP file") from exc
        if len(data) > IMAGE_INPUT_MAX_BYTES:
            raise InputError(f"{field}.b64", f"{field}.b64 decodes to {len(data)} bytes, over "
                             f"the limit of {IMAGE_INPUT_MAX_BYTES}",
                             f"{IMAGE_INPUT_MAX_BYTES} bytes", code="limit_exceeded")
        return data
    key = given.s3_key or ""
    found = fetch(key, IMAGE_OBJECT_MAX_BYTES)
    if found is None:
        raise InputError(f"{field}.s3_key", f"{field}.s3_key {key!r} does not exist in the "
                         "pool's bucket", "an existing object", code="not_found")
    if len(found) > IMAGE_OBJECT_MAX_BYTES:
        raise InputError(f"{field}.s3_key", f"{field}.s3_key {key!r} is over the limit of "
                         f"{IMAGE_OBJECT_MAX_BYTES} bytes", f"{IMAGE_OBJECT_MAX_BYTES} bytes",
                         code="limit_exceeded")
    return found


def decode(field: str, data: bytes, *, max_pixels: int) -> Image.Image:
    """Open an encoded image; its size is checked from the header before any pixel is read
    (a small file may claim a huge image)."""
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in FORMATS:
            raise InputError(field, f"{field} is {img.format}, not an accepted format",
                             ", ".join(FORMATS))
        w, h = img.size
        if w * h > max_pixels:
            raise InputError(field, f"{field} is {w}x{h} = {w * h} pixels, over the model's "
                             f"limit of {max_pixels}", f"maxPixels={max_pixels}",
                             code="limit_exceeded")
        img.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(field, f"{field} is not a readable image: {exc}",
                         ", ".join(FORMATS)) from exc
    return img


def resolve(spec: InitSpec, *, width: int, height: int, max_pixels: int,
            fetch: Fetch) -> tuple[Conditioning, int, int]:
    """Fetch, decode and check; (conditioning, width, height) the request is served at."""
    raw = read_bytes("init_image", spec.image, fetch)
    image = decode("init_image", raw, max_pixels=max_pixels)
    w, h = image.size
    if spec.size_given and (w, h) != (width, height):
        raise InputError("init_image", f"init_image is {w}x{h}, the request asks for "
                         f"{width}x{height}", f"{width}x{height}")
    if not spec.size_given:
        for name, side in (("width", w), ("height", h)):
            if side < MIN_SIDE or side % SIDE_MULTIPLE:
                raise InputError("init_image", f"init_image {name} {side} must be at least "
                                 f"{MIN_SIDE} and a multiple of {SIDE_MULTIPLE}",
                                 f">= {MIN_SIDE}, multiple of {SIDE_MULTIPLE}")
    mask = None
    mask_digest = None
    if spec.mask is not None:
        mask_raw = read_bytes("mask", spec.mask, fetch)
        mask_img = decode("mask", mask_raw, max_pixels=max_pixels)
        if mask_img.size != (w, h):
            raise InputError("mask", f"mask is {mask_img.size[0]}x{mask_img.size[1]}, "
                             f"init_image is {w}x{h}", f"{w}x{h} (the init image's size)")
        mask = mask_img.convert("L")
        mask_digest = hashlib.sha256(mask_raw).hexdigest()
    cond = Conditioning(image=image.convert("RGB"), mask=mask, strength=spec.strength,
                        image_sha256=hashlib.sha256(raw).hexdigest(), mask_sha256=mask_digest)
    return cond, w, h
