"""Image encoding: PIL image → PNG or WebP bytes with the generation parameters embedded.

Pure CPU work, run in a thread by the batch runner. PNG carries them in a text chunk named
"parameters" (the convention of common Stable Diffusion tools; tEXt, or iTXt when the prompt is
not Latin-1) plus "imagegen" (the same as JSON). WebP carries the JSON in XMP
(imagegen:parameters), because EXIF text fields are ASCII-only and would mangle prompts. The
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
from PIL.PngImagePlugin import PngInfo

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp"}
XMP_NS = "https://imagegen.dev/ns/xmp/1.0/"
WEBP_QUALITY = 90


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
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in rest if v is not None))
    return "\n".join(lines)


def encode(image: Image.Image, fmt: str, params: dict[str, Any]) -> Encoded:
    """Encode `image` as `fmt` (png | webp) with `params` embedded; deterministic bytes."""
    buf = io.BytesIO()
    meta_json = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", parameters_text(params))
        info.add_text("imagegen", meta_json)
        image.save(buf, format="PNG", pnginfo=info)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=WEBP_QUALITY, method=4, xmp=_xmp(meta_json))
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    data = buf.getvalue()
    return Encoded(data, hashlib.sha256(data).hexdigest(), fmt, CONTENT_TYPES[fmt])


def read_parameters(data: bytes) -> dict[str, Any]:
    """The embedded parameters of bytes made by `encode` (for tests and tools)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "PNG":
            text = getattr(img, "text", {}).get("imagegen")
            return dict(json.loads(text)) if text else {}
        xmp = img.info.get("xmp")
        if not xmp:
            return {}
        root = ElementTree.fromstring(xmp)
        for el in root.iter():
            value = el.attrib.get(f"{{{XMP_NS}}}parameters")
            if value is not None:
                return dict(json.loads(value))
        return {}


def _xmp(meta_json: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:imagegen="{XMP_NS}" '
        f"imagegen:parameters={quoteattr(meta_json)}/>"
        "</rdf:RDF></x:xmpmeta>"
    ).encode()
