"""Every kind of bad upload ends in a named refusal; good ones of every mode decode."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deepskin.core import checks
from deepskin.core.preprocess import Preprocess, model_input, to_rgb


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def lesion_like(size=(400, 300)) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(90, 200, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries one tiny IDAT: a decompression-bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"hello, this is text", "unsupported_format"),
    (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "unsupported_format"),
    (b"GIF89a" + b"\x00" * 64, "unsupported_format"),
    (b"%PDF-1.7" + b"\x00" * 64, "unsupported_format"),
    (png_header_only(30000, 30000), "too_many_pixels"),
    (encode(lesion_like(), "JPEG")[:2000], "corrupt"),
    (encode(Image.new("RGB", (1, 1)), "PNG"), "too_small"),
    (b"\xff\xd8\xff" + b"\x00" * (checks.MAX_BYTES), "too_large"),
])
def test_bad_uploads_are_rejected_by_name(data, reason):
    with pytest.raises(checks.Refusal) as refusal:
        checks.decode(data)
    assert refusal.value.status == "rejected" and refusal.value.reason == reason and refusal.value.message


def test_heic_refusal_tells_iphone_users_what_to_do():
    with pytest.raises(checks.Refusal) as refusal:
        checks.decode(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert "HEIC" in refusal.value.message


@pytest.mark.parametrize("mode,fmt", [
    *[(mode, "PNG") for mode in ("RGB", "L", "RGBA", "P", "I;16", "LA")],
    ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGBA", "WEBP"),
])
def test_every_colour_mode_becomes_model_input(mode, fmt):
    image = lesion_like().convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(lesion_like().convert("L"), np.uint16) * 256)
    data = encode(image, fmt)
    x = model_input(checks.decode(data), Preprocess())
    assert x.shape == (3, 192, 192) and x.dtype == np.float32 and np.isfinite(x).all()


def test_exif_orientation_is_applied():
    image = lesion_like((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = checks.decode(encode(image, "JPEG", exif=exif.tobytes()))
    assert to_rgb(decoded).size == (200, 400)


def test_large_jpeg_is_decoded_at_reduced_size():
    big = lesion_like((4000, 3000))
    decoded = checks.decode(encode(big, "JPEG", quality=80))
    assert min(decoded.size) >= 150 and decoded.size[0] <= 1000


@pytest.mark.parametrize("make,reason", [
    (lambda img: img.point(lambda v: v // 8), "too_dark"),
    (lambda img: Image.new("RGB", img.size, (255, 255, 255)), "overexposed"),
    (lambda img: Image.new("RGB", img.size, (150, 110, 100)), "blurry"),
])
def test_photo_quality_gate(make, reason):
    with pytest.raises(checks.Refusal) as refusal:
        checks.photo_quality(make(lesion_like((150, 150))))
    assert refusal.value.status == "unusable" and refusal.value.reason == reason


def test_real_lesion_photos_pass_the_quality_gate():
    from deepskin.core.preprocess import canonical, centre_square, to_rgb
    from training.data import data_root, image_paths

    paths = sorted(image_paths(data_root()).values())[:50]
    for path in paths:
        with Image.open(path) as image:
            checks.photo_quality(centre_square(canonical(to_rgb(image), Preprocess())))


# --- decoding within a memory budget (peak RSS per input kind: benchmarks/decode_memory.py) ----------------

@pytest.mark.parametrize("mode", ["RGBA", "I;16", "LA", "P", "RGB"])
def test_large_images_are_shrunk_in_their_own_mode_before_conversion(mode):
    side = 3 * checks.SHRINK_SHORT_SIDE + 7
    big = lesion_like((side + 100, side))
    image = big.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(big.convert("L"), np.uint16) * 256)
    decoded = checks.decode(encode(image, "PNG"))
    assert decoded.mode == mode and checks.SHRINK_SHORT_SIDE <= min(decoded.size) < 2 * checks.SHRINK_SHORT_SIDE


def test_an_ordinary_image_is_decoded_whole():
    image = lesion_like((2 * checks.SHRINK_SHORT_SIDE - 1, 2 * checks.SHRINK_SHORT_SIDE - 1))
    decoded = checks.decode(encode(image, "PNG"))
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_shrinking_keeps_the_exif_orientation():
    side = 3 * checks.SHRINK_SHORT_SIDE
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = checks.decode(encode(lesion_like((2 * side, side)).convert("RGBA"), "PNG", exif=exif.tobytes()))
    assert to_rgb(decoded).width < to_rgb(decoded).height


def test_a_header_that_would_not_fit_the_decoding_budget_is_refused_before_decoding():
    # A WebP is decoded through extra full-size copies (4 of 4 bytes a pixel): this one would exceed the budget.
    side = int((checks.MAX_DECODED_BYTES / 16) ** 0.5) + 64
    data = encode(Image.new("RGB", (side, side), (150, 110, 100)), "WEBP")
    assert side * side < checks.MAX_PIXELS
    assert checks.decoded_bytes(Image.open(io.BytesIO(data))) > checks.MAX_DECODED_BYTES
    with pytest.raises(checks.Refusal) as refusal:
        checks.decode(data)
    assert refusal.value.reason == "too_many_pixels" and "JPEG" in refusal.value.message


def test_an_animation_is_refused_by_name():
    frames = [lesion_like(), lesion_like().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(checks.Refusal) as refusal:
        checks.decode(data)
    assert refusal.value.reason == "animated"
