"""Every kind of bad upload ends in a named refusal; good ones of every mode decode."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from benchmarks.decode_memory import flooded_jpeg, flooded_png, flooded_webp, with_extra_scans
from deepskin.core import checks, chunks
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


# --- what cannot be a photo, refused from its header or its layout before a pixel is decoded ------------------
# Whole files of each kind, up to 20 MB, are measured (peak RSS and CPU) by benchmarks/decode_memory.py.

def progressive_jpeg(mode: str = "RGB", size=(400, 300)) -> bytes:
    return encode(lesion_like(size).convert(mode), "JPEG", progressive=True)


def declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its start-of-frame (baseline or progressive) declaring width x height over the same data."""
    sof = next(part.start for part in chunks.jpeg_segments(jpeg) if part.kind in (0xC0, 0xC2))
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def refusal_of(data: bytes) -> checks.Refusal:
    with pytest.raises(checks.Refusal) as refusal:
        checks.decode(data)
    assert refusal.value.status == "rejected" and refusal.value.message
    return refusal.value


@pytest.mark.parametrize("width,height,reason", [
    (1199, 41700, "extreme_aspect_ratio"),  # 50 MP, but never shrunk: shrinking goes by the short side
    (41700, 1199, "extreme_aspect_ratio"),
    (100, 801, "extreme_aspect_ratio"),
    (12_001, 3_000, "side_too_long"),
])
def test_a_shape_no_photo_has_is_refused_from_its_header(width, height, reason):
    assert refusal_of(png_header_only(width, height)).reason == reason


def test_the_most_elongated_shape_accepted_decodes():
    image = lesion_like((checks.MIN_SIDE, checks.MIN_SIDE * checks.MAX_ASPECT))
    assert checks.decode(encode(image, "PNG")).size == image.size


def test_a_progressive_jpeg_whose_coefficients_exceed_the_budget_is_refused_from_its_header():
    # Progressive decoding keeps every DCT coefficient at full size: 49 MP in CMYK is 392 MB of them.
    data = declaring(progressive_jpeg("CMYK"), 7000, 7000)
    refusal = refusal_of(data)
    assert refusal.reason == "too_many_pixels" and "baseline" in refusal.message
    assert checks.jpeg_coefficient_bytes(Image.open(io.BytesIO(data))) == 7000 * 7000 * 4 * 2


def test_coefficients_follow_the_chroma_subsampling_and_count_only_for_several_scans():
    image = Image.open(io.BytesIO(declaring(progressive_jpeg(), 7000, 7000)))  # 4:2:0: chroma at a quarter
    assert checks.jpeg_coefficient_bytes(image) == pytest.approx(7000 * 7000 * 2 * 3 / 2, rel=0.01)
    assert checks.decoded_bytes(image, scans=10) < checks.MAX_DECODED_BYTES
    assert checks.decoded_bytes(image, scans=1) == 7000 * 7000 * 4 // 64  # baseline: decoded at 1/8 scale


@pytest.mark.parametrize("extra,accepted", [(checks.MAX_SCANS - 10, True), (checks.MAX_SCANS - 9, False)])
def test_a_jpeg_in_more_scans_than_a_photo_has_is_refused(extra, accepted):
    data = with_extra_scans(progressive_jpeg(), count=extra)  # the encoder writes 10 scans
    if accepted:
        checks.decode(data)
    else:
        assert refusal_of(data).reason == "too_many_scans"


@pytest.mark.parametrize("make", [
    lambda: with_extra_scans(progressive_jpeg(), size=1_000_000),  # thousands of scans: minutes to decode
    lambda: flooded_jpeg(encode(lesion_like(), "JPEG")),  # 4.7 million empty comments
    lambda: flooded_png(encode(lesion_like(), "PNG"), b"prVt"),
    lambda: flooded_png(encode(lesion_like(), "PNG"), b"IDAT"),
    lambda: flooded_webp(encode(lesion_like(), "WEBP")),
], ids=["jpeg-scans", "jpeg-comments", "png-private-chunks", "png-idat-chunks", "webp-chunks"])
def test_a_file_of_millions_of_parts_is_refused_before_they_are_walked(make):
    data = make()
    assert len(data) > 900_000
    assert refusal_of(data).reason in ("too_many_chunks", "too_many_scans")


def test_a_scans_stuffed_bytes_restarts_and_fill_bytes_are_not_segments():
    jpeg = encode(lesion_like(), "JPEG")
    sos = next(part for part in chunks.jpeg_segments(jpeg) if part.kind == chunks.JPEG_SOS)
    header_end = sos.start + 2 + int.from_bytes(jpeg[sos.start + 2:sos.start + 4], "big")
    scan = b"\x12\xff\x00\x34\xff\xd3\x56\xff\xff"  # a stuffed FF, a restart marker, a fill byte
    segments = list(chunks.jpeg_segments(jpeg[:header_end] + scan + b"\xd9"))
    assert segments[-2] == (chunks.JPEG_SOS, sos.start, header_end + len(scan) - 1)
    assert segments[-1].kind == chunks.JPEG_EOI


def test_a_stray_byte_between_segments_hides_no_scans():
    # The decoder skips stray bytes before a marker (it warns and goes on), so the count must too.
    jpeg = progressive_jpeg()
    end = len(jpeg) - 2  # the end-of-image marker
    data = with_extra_scans(jpeg[:end] + b"\xff\xfe\x00\x02" + b"\x00" + jpeg[end:], count=checks.MAX_SCANS)
    assert refusal_of(data).reason == "too_many_scans"
