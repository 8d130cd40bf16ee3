"""Is this upload something we may and can assess? Format, size, decoding, and photo quality.

Every refusal is a `Refusal` with a stable `reason` code and a `message` for a person; `status` says
whether the file itself is unacceptable (`rejected`) or just a photo to retake (`unusable`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepskin.core import chunks

MAX_BYTES = 20 * 1024 * 1024  # a 12 MP phone JPEG is 3-8 MB; PNGs of the same can reach ~20 MB
MAX_PIXELS = 50_000_000  # above any phone or dermatoscope; protects memory from decompression bombs
MAX_SIDE = 12_000  # a 50 MP phone photo is 8160 px long
MAX_ASPECT = 8  # a panorama is about 4:1; a thin strip is never shrunk (shrinking goes by the short side)
MAX_SCANS = 20  # a progressive JPEG has about 10 scans; each extra one costs a pass over every block
# A full-size decode may allocate this much (a 50 MP RGBA PNG, or a progressive JPEG's coefficients); with the
# model loaded an instance then peaks under 450 MB of its 1 GiB (benchmarks/decode_memory.py). What would need
# more is refused from its header.
MAX_DECODED_BYTES = 200_000_000
SHRINK_SHORT_SIDE = 600  # decoded images are box-averaged to this shorter side: 4x the canonical 150
MIN_SIDE = 64  # below this there is no lesion detail to assess

# Photo-quality limits, measured on the canonical (shorter side 150) greyscale image and set from the
# HAM10000 copies' percentiles below; training/reports/evaluation.md counts the lesions they refuse on each
# test split (none of HAM10000's or PAD-UFES-20's for the current model).
MIN_SHARPNESS = 5.0  # Laplacian variance; HAM10000 copies: 0.5th percentile 10, a 1.5 px blur gives 2-7
MIN_BRIGHTNESS = 40.0  # mean grey level 0-255; HAM10000 copies: 0.5th percentile 102
MAX_CLIPPED_FRACTION = 0.5  # share of pixels at >= 250


@dataclass
class Refusal(Exception):
    status: str  # "rejected" or "unusable"
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status}/{self.reason}: {self.message}"


def reject(reason: str, message: str) -> Refusal:
    return Refusal("rejected", reason, message)


# Magic bytes of formats people actually send, supported or not, so a refusal can name them.
_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"%PDF", "pdf"),
)
SUPPORTED = ("jpeg", "png", "webp")


def sniff(data: bytes) -> str:
    """The format by content (never by file name or declared type)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "heic" if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1") else "avif"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return "unknown"


def decode(data: bytes) -> Image.Image:
    """Bytes -> a decoded PIL image, or a `Refusal` that says why not.

    The file's layout and header are checked before any pixel is decoded, and a large image is shrunk as it
    is decoded (a JPEG by its decoder's own scaling) or straight after (by whole-pixel averaging in its own
    mode), so that what the later steps convert and copy is small: see `decoded_bytes` and `shrunk`.
    """
    if not data:
        raise reject("empty", "The file is empty.")
    if len(data) > MAX_BYTES:
        raise reject("too_large", f"The file is {len(data) / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB.")
    kind = sniff(data)
    if kind not in SUPPORTED:
        shown = {"heic": "HEIC (iPhone)", "unknown": "not an image we recognise"}.get(kind, kind.upper())
        raise reject(
            "unsupported_format",
            f"This file is {shown}. Please send a JPEG, PNG or WebP photo"
            + (" (on an iPhone: Settings > Camera > Formats > Most Compatible)." if kind == "heic" else "."),
        )
    scans = check_layout(kind, data)  # before Pillow walks the same parts, in Python
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            check_header(image, scans)
            if image.format == "JPEG":
                # Decode a JPEG at the smallest power-of-two scale that still covers the model's needs.
                image.draft("RGB", (max(150, width // 8), max(150, height // 8)))
            image.load()
            image = shrunk(image)
    except Refusal:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise reject("too_many_pixels", "The image has too many pixels to be a photo.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise reject("corrupt", f"The image could not be read ({type(exc).__name__}); it may be truncated.") from None
    if min(width, height) < MIN_SIDE:
        raise reject("too_small", f"The image is {width}x{height} pixels; at least {MIN_SIDE} on each side is needed.")
    return image


def check_layout(kind: str, data: bytes) -> int:
    """Refuse a file split into more parts than a photo has, or a JPEG in more scans; the JPEG's scan count."""
    parts = chunks.parts(kind, data)
    if len(parts) > chunks.MAX_PARTS:
        raise reject("too_many_chunks", f"The file is split into more than {chunks.MAX_PARTS:,} parts; a photo has "
                                        "a few dozen. Please send the photo as the camera saved it.")
    scans = sum(part.kind == chunks.JPEG_SOS for part in parts) if kind == "jpeg" else 0
    if scans > MAX_SCANS:
        raise reject("too_many_scans", f"The JPEG is stored in {scans} scans; a photo has about 10 (at most "
                                       f"{MAX_SCANS} are accepted). Please send the photo as the camera saved it.")
    return scans


def check_header(image: Image.Image, scans: int = 0) -> None:
    """Refuse, from the header alone, what would not fit the decoding budget or is not one photo. `scans`: how
    many scans a JPEG is stored in (see `decoded_bytes`)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise reject("too_many_pixels", f"The image is {width}x{height} pixels; the limit is 50 megapixels.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise reject("extreme_aspect_ratio", f"The image is {width}x{height} pixels, more than {MAX_ASPECT} times "
                                             "as long as it is wide: not a photo. Please send a photo of the lesion.")
    if max(width, height) > MAX_SIDE:
        raise reject("side_too_long", f"The image is {width}x{height} pixels; no side may be longer than "
                                      f"{MAX_SIDE:,}. Please send a photo of the lesion.")
    if image.format in ("PNG", "WEBP") and getattr(image, "n_frames", 1) > 1:
        # (A JPEG's extra frames are a phone's multi-picture previews: only its first picture is decoded.)
        raise reject("animated", "This is an animation. Please send a single photo.")
    if decoded_bytes(image, scans) > MAX_DECODED_BYTES:
        advice = "save it as an ordinary (baseline) JPEG" if scans > 1 else "send it as a JPEG"
        raise reject("too_many_pixels", f"The image is {width}x{height} pixels in {image.mode} mode: too large "
                                        f"to decode. Please {advice}.")


def decoded_bytes(image: Image.Image, scans: int = 0) -> int:
    """What decoding `image` at full size would allocate: Pillow keeps 3- and 4-channel pixels in 4 bytes,
    and its WebP decoder holds libwebp's output beside the image. A JPEG is decoded at 1/8 scale, but one
    stored in more than one scan (progressive) first collects all its DCT coefficients at full size."""
    per_pixel = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}.get(image.mode, 4)
    pixels = image.width * image.height * per_pixel
    if image.format == "JPEG":
        return pixels // 64 + (jpeg_coefficient_bytes(image) if scans > 1 else 0)
    return pixels * (4 if image.format == "WEBP" else 1)  # WebP: measured by the benchmark


def jpeg_coefficient_bytes(image: Image.Image) -> int:
    """A JPEG's DCT coefficients: 2 bytes each, 64 per 8x8 block of each component at its own sampling (a
    subsampled chroma component has a quarter of the luma's blocks; a CMYK image four full-size components)."""
    sampling = [(max(h, 1), max(v, 1)) for _, h, v, _ in image.layer]  # per component: (id, h, v, table)
    h_max, v_max = max((h for h, _ in sampling), default=1), max((v for _, v in sampling), default=1)
    return sum(-(-image.width * h // (h_max * 8)) * -(-image.height * v // (v_max * 8)) * 64 * 2
               for h, v in sampling)


def shrunk(image: Image.Image) -> Image.Image:
    """A decoded image of more than twice SHRINK_SHORT_SIDE, box-averaged down to at least SHRINK_SHORT_SIDE
    in its own mode (a 16-bit or RGBA image is converted only after it is small). Smaller images, which
    are every JPEG after its draft scaling, come back as they are. Both ways keep `info` (EXIF orientation)."""
    factor = min(image.size) // SHRINK_SHORT_SIDE
    if factor < 2:
        return image
    if image.mode in ("1", "P", "I;16", "I;16B", "I;16L"):  # modes `reduce` lacks; resize samples 1 and P
        return image.resize((-(-image.width // factor), -(-image.height // factor)), Image.BOX)
    if image.mode in ("LA", "RGBA"):
        # Band by band: Pillow would first make a premultiplied full-size copy of the whole image.
        small = Image.merge(image.mode, [image.getchannel(band).reduce(factor) for band in image.getbands()])
        small.info = image.info
        return small
    return image.reduce(factor)


def photo_quality(image: Image.Image) -> None:
    """Raise `unusable` for a photo that is too blurry, too dark or burnt out (image at canonical scale)."""
    grey = image.convert("L")
    arr = np.asarray(grey, dtype=np.float32)
    brightness = float(arr.mean())
    if brightness < MIN_BRIGHTNESS:
        raise Refusal("unusable", "too_dark", "The photo is too dark. Retake it in daylight or with more light.")
    if float((arr >= 250).mean()) > MAX_CLIPPED_FRACTION:
        raise Refusal("unusable", "overexposed", "The photo is overexposed. Avoid the flash and direct glare.")
    if sharpness(grey) < MIN_SHARPNESS:
        raise Refusal("unusable", "blurry", "The photo is out of focus. Hold still and let the camera focus.")


def sharpness(grey: Image.Image) -> float:
    """Variance of a Laplacian edge response: low for a blurred photo."""
    a = np.asarray(grey, dtype=np.float32)
    laplacian = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4 * a[1:-1, 1:-1]
    return float(laplacian.var())
