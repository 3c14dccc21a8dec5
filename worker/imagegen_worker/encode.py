"""Image encoding: PIL image → PNG, WebP or JPEG bytes, watermarked, with provenance embedded.

Pure CPU work, run in a thread by the batch runner. The invisible watermark (watermark.py) goes
into the pixels first (unless the pool turned it off). The provenance (model, revision, seed,
sampler, steps, guidance, adapters, request id) goes into the container: PNG carries it in a text
chunk named "parameters" (the convention of common Stable Diffusion tools; tEXt, or iTXt when the
prompt is not Latin-1) plus "imagegen" (the same as JSON). WebP and JPEG carry it in EXIF:
ImageDescription holds the JSON with non-ASCII escaped (EXIF text is ASCII; the escapes make it
lossless), UserComment the "parameters" text in UTF-16 (charset "UNICODE", as those tools write
it), and XMP (imagegen:parameters) the JSON once more. Lossy formats use `quality` (1..100). The
object name is the sha256 of the bytes, so identical bytes are stored once.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from PIL import Image
from PIL.ExifTags import IFD, Base
from PIL.PngImagePlugin import PngInfo

from . import watermark
from .content_credentials import ContentCredentials

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
XMP_NS = "https://imagegen.dev/ns/xmp/1.0/"
DEFAULT_QUALITY = 90  # the pool's spec.output.quality default, for webp and jpeg
USER_COMMENT_UNICODE = b"UNICODE\0"


@dataclass(frozen=True)
class Encoded:
    data: bytes
    sha256: str
    format: str
    content_type: str


def parameters_text(params: dict[str, Any]) -> str:
    """Human-readable summary in the "parameters" convention: prompt, negative, key: value."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    rest = [
        ("Steps", params.get("steps")),
        ("Sampler", params.get("sampler")),
        ("CFG scale", params.get("guidance")),
        ("Seed", params.get("seed")),
        ("Size", f"{params.get('width')}x{params.get('height')}"),
        ("Model", params.get("model")),
        ("Model revision", params.get("model_revision")),
        ("Adapters", _adapters(params.get("adapters"))),
        ("Request id", params.get("request_id")),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in rest if v is not None))
    return "\n".join(lines)


def _adapters(adapters: Any) -> str | None:
    if not adapters:
        return None
    return " ".join(f"{a.get('name')}:{a.get('weight')}" if isinstance(a, dict) else str(a)
                    for a in adapters)


def encode(image: Image.Image, fmt: str, params: dict[str, Any], *,
           quality: int = DEFAULT_QUALITY, mark: bool = True,
           embed: bool = True, credentials: ContentCredentials | None = None) -> Encoded:
    """Encode `image` as `fmt` (png | webp | jpeg) with `params` embedded; deterministic bytes.

    mark: the invisible watermark (params gain "watermark": the scheme, or null when the image
    is too small for it). embed=False writes no metadata at all (the benchmark's baseline).
    credentials: sign a C2PA manifest with `params` into the encoded bytes (last: it hashes
    them).
    """
    if mark:
        marked = watermark.supported(image)
        image = watermark.apply(image)
        params = {**params, "watermark": f"{watermark.METHOD}:{watermark.WATERMARK_MESSAGE:012x}"
                  if marked else None}
    buf = io.BytesIO()
    meta_json = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if fmt == "png":
        info = PngInfo()
        if embed:
            info.add_text("parameters", parameters_text(params))
            info.add_text("imagegen", meta_json)
        image.save(buf, format="PNG", pnginfo=info)
    elif fmt in ("webp", "jpeg"):
        extra: dict[str, Any] = {"exif": _exif(params), "xmp": _xmp(meta_json)} if embed else {}
        if fmt == "webp":
            image.save(buf, format="WEBP", quality=quality, method=4, **extra)
        else:
            rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
            rgb.save(buf, format="JPEG", quality=quality, **extra)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    data = buf.getvalue()
    if credentials is not None:
        data = credentials.sign(data, CONTENT_TYPES[fmt], params)
    return Encoded(data, hashlib.sha256(data).hexdigest(), fmt, CONTENT_TYPES[fmt])


def read_parameters(data: bytes) -> dict[str, Any]:
    """The embedded parameters of bytes made by `encode` (for tests and tools)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "PNG":
            text = getattr(img, "text", {}).get("imagegen")
            return dict(json.loads(text)) if text else {}
        description = img.getexif().get(Base.ImageDescription)
        if description:
            return dict(json.loads(description))
        xmp = img.info.get("xmp")
        if not xmp:
            return {}
        root = ElementTree.fromstring(xmp)
        for el in root.iter():
            value = el.attrib.get(f"{{{XMP_NS}}}parameters")
            if value is not None:
                return dict(json.loads(value))
        return {}


def read_user_comment(data: bytes) -> str | None:
    """The EXIF UserComment of WebP/JPEG bytes made by `encode` (the "parameters" text)."""
    with Image.open(io.BytesIO(data)) as img:
        raw = img.getexif().get_ifd(IFD.Exif).get(Base.UserComment)
    if not isinstance(raw, bytes) or not raw.startswith(USER_COMMENT_UNICODE):
        return None
    return raw[len(USER_COMMENT_UNICODE):].decode("utf-16-be")


def _exif(params: dict[str, Any]) -> bytes:
    exif = Image.Exif()
    exif[Base.ImageDescription] = json.dumps(params, sort_keys=True, ensure_ascii=True,
                                             separators=(",", ":"))
    exif[Base.Software] = "imagegen-operator"
    exif.get_ifd(IFD.Exif)[Base.UserComment] = (
        USER_COMMENT_UNICODE + parameters_text(params).encode("utf-16-be"))
    return exif.tobytes()


def _xmp(meta_json: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:imagegen="{XMP_NS}" '
        f"imagegen:parameters={quoteattr(meta_json)}/>"
        "</rdf:RDF></x:xmpmeta>"
    ).encode()
