"""Invisible watermark: the scheme of the SDXL reference pipeline, applied to every image.

The same as diffusers' StableDiffusionXLWatermarker (which copies Stability AI's reference
scripts): the `invisible-watermark` package's DWT-DCT embedding ("dwtDct") of a fixed 48-bit
message, on the BGR pixels in float, clipped and rounded back to 8 bits. A detector built for SDXL
outputs therefore recognises ours. The scheme needs at least 256x256 pixels (the package refuses
smaller images; diffusers skips them too): smaller images are left unmarked and say so in their
metadata.

The package's embedding is given 8-bit pixels, its documented input: diffusers hands it floats,
for which OpenCV's YUV conversion uses another chroma offset, and the package's own decoder then
reads back little more than chance. On 8-bit pixels the 48 bits come back from a lossless image
all or nearly all (a few flip near the scheme's 256x256 minimum, from the package's rounding), so
detection is a threshold on matching bits: DETECT_BITS of 48 is reached by chance with
probability ~1e-7. Lossy re-encoding (webp, jpeg) weakens it (see docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image

# diffusers.pipelines.stable_diffusion_xl.watermark.WATERMARK_MESSAGE (a test checks they agree).
WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110
WATERMARK_BITS: list[int] = [int(bit) for bit in bin(WATERMARK_MESSAGE)[2:]]
METHOD = "dwtDct"
MIN_PIXELS = 256 * 256
DETECT_BITS = 42

_encoder = WatermarkEncoder()
_encoder.set_watermark("bits", WATERMARK_BITS)


def supported(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS and min(image.size) >= 8


def apply(image: Image.Image) -> Image.Image:
    """`image` with the watermark embedded (RGB); unchanged when too small for the scheme."""
    if not supported(image):
        return image
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    marked = _encoder.encode(bgr, METHOD)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(marked), "RGB")


def decode_bits(image: Image.Image) -> list[int]:
    """The 48 bits read back from `image` (for tests and tools: compare with WATERMARK_BITS)."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    decoder = WatermarkDecoder("bits", len(WATERMARK_BITS))
    return [int(b) for b in decoder.decode(bgr, METHOD)]


def detected(image: Image.Image) -> bool:
    """Whether `image` carries the watermark (at least DETECT_BITS of the 48 bits match)."""
    if not supported(image):
        return False
    bits = decode_bits(image)
    return sum(a == b for a, b in zip(bits, WATERMARK_BITS, strict=True)) >= DETECT_BITS
